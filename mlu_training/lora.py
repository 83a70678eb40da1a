"""Where an update goes: LoRA adapters on the language model, the projector, the vision tower,
or a mix, each group with its own learning rate (the paper's modality ablation)."""

from __future__ import annotations

import re

TARGETS = {
    # Module names of the LLaVA family and of Qwen-VL (visual / merger) in transformers 5.
    "language": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    "projector": r".*(multi_modal_projector\.linear_[12]|visual\.merger\.mlp\.[0-9]+)",
    "vision_tower": r".*(vision_tower|visual\.blocks).*\.(q_proj|k_proj|v_proj|out_proj|qkv|proj|fc1|fc2)",
}
CHOICES = {
    "language": ("language",),
    "projector": ("projector",),
    "vision_tower": ("vision_tower",),
    "vision": ("projector", "vision_tower"),
    "both": ("language", "projector", "vision_tower"),
}


def target_regex(where: str) -> str:
    try:
        parts = CHOICES[where]
    except KeyError:
        raise ValueError(f"LoRA targets {where!r}: choose one of {', '.join(CHOICES)}") from None
    return "|".join(f"(?:{TARGETS[p]})" for p in parts)


def attach_lora(model, where: str, rank: int, alpha: int, seed: int):
    """A fresh LoRA adapter on the chosen parts; everything else frozen."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA's A matrices are random: seeded, so runs repeat
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_regex(where), bias="none")
    peft_model = get_peft_model(model, config)
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise ValueError(f"LoRA targets {where!r} matched no module of {type(model).__name__}")
    return peft_model


def param_groups(peft_model, lr: dict[str, float]) -> list[dict]:
    """Trainable parameters grouped by part, each with its learning rate."""
    groups: dict[str, list] = {part: [] for part in TARGETS}
    for name, p in peft_model.named_parameters():
        if not p.requires_grad:
            continue
        part = next((k for k, pattern in TARGETS.items() if re.match(pattern, name.split(".lora_")[0])), "language")
        groups[part].append(p)
    return [{"params": ps, "lr": lr[part], "name": part} for part, ps in groups.items() if ps]
