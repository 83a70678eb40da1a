"""Where an update goes: LoRA adapters on the language model, the projector, the vision tower,
or a mix, each group with its own learning rate (the paper's modality ablation). The module names
of each model family are in `models/families.py::FAMILIES`."""

from __future__ import annotations

from .models.families import PARTS, FamilyFeatureError, family_of, get_family

CHOICES = {
    "language": ("language",),
    "projector": ("projector",),
    "vision_tower": ("vision_tower",),
    "vision": ("projector", "vision_tower"),
    "both": ("language", "projector", "vision_tower"),
}


def _parts(where: str) -> tuple[str, ...]:
    try:
        return CHOICES[where]
    except KeyError:
        raise ValueError(f"LoRA targets {where!r}: choose one of {', '.join(CHOICES)}") from None


def target_regex(where: str, model_type: str = "llava") -> str:
    """The regex of the modules LoRA wraps for `where` in the family `model_type`."""
    family = get_family(model_type)
    return "|".join(f"(?:{family.pattern(p)})" for p in _parts(where) if family.pattern(p))


def attach_lora(model, where: str, rank: int, alpha: int, seed: int):
    """A fresh LoRA adapter on the chosen parts of the model's family; everything else frozen."""
    import torch
    from peft import LoraConfig, get_peft_model

    family = family_of(model)
    parts = _parts(where)
    for part in parts:
        family.require(f"LoRA on {part}")
    params = [p for p in family.projector_parameters] if "projector" in parts else []
    regex = target_regex(where, family.model_type)
    torch.manual_seed(seed)  # LoRA's A matrices are random: seeded, so runs repeat
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=regex or None, bias="none",
                        target_parameters=params or None)
    peft_model = get_peft_model(model, config)
    names = {n.split(".lora_")[0] for n, p in peft_model.named_parameters() if p.requires_grad}
    missing = [part for part in parts if not any(_part(family, n) == part for n in names)]
    if missing:
        raise FamilyFeatureError(family.model_type, f"take LoRA on {', '.join(missing)} (targets {where!r})",
                                 f"no module of {type(model).__name__} matched; see models/families.py")
    return peft_model


def _part(family, name: str) -> str | None:
    inner = name.removeprefix("base_model.model.")
    return family.part_of(inner) or family.part_of(name)


def param_groups(peft_model, lr: dict[str, float]) -> list[dict]:
    """Trainable parameters grouped by part, each with its learning rate."""
    family = family_of(peft_model)
    groups: dict[str, list] = {part: [] for part in PARTS}
    for name, p in peft_model.named_parameters():
        if not p.requires_grad:
            continue
        groups[_part(family, name.split(".lora_")[0]) or "language"].append(p)
    return [{"params": ps, "lr": lr[part], "name": part} for part, ps in groups.items() if ps]
