"""Training one LoRA adapter for one unlearning task: shared by the baselines (which then merge
it into the backbone) and by LUMoE (which keeps it apart, as an expert)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import pandas as pd

from .benchmark import FORGET, RETAIN
from .texts import REFUSAL_ANSWER


def without_training_seed(settings: dict) -> dict:
    """A config's settings (`as_dict()`, with a `training` AdapterTraining) with the training seed
    left out: what runs of one configuration with other seeds share (their config key)."""
    return {**settings, "training": {**settings["training"], "seed": None}}


@dataclass(frozen=True)
class AdapterTraining:
    """How one LoRA adapter is trained, whatever the method: the baselines' steps and LUMoE's
    experts share this (each with its own defaults); a method's own hyperparameters are its Args.
    The rates suit the tiny model; for LLaVA-7B use the paper's (projector 1e-5, vision 2e-6)."""

    steps: int = 20  # optimisation steps per task
    batch_size: int = 8
    lr: float | None = None  # language-model LoRA; None: the method's budget (UnlearningMethod.lr)
    projector_lr: float = 1e-3
    vision_lr: float = 1e-4
    lora_rank: int = 32  # the paper's rank and alpha
    lora_alpha: int = 32
    targets: str = "language"  # language | projector | vision_tower | vision | both
    seed: int = 0
    # Off until the mini leaderboard is checked with it on: grouping made adapter steps 1.4-1.7x
    # faster (bench/unlearning.py) but spoiled the base model's fine-tuning (models/sft.py).
    length_grouped: bool = False
    # The same rows to a batch, several to a row where the family allows it (packed_training_batch;
    # answer_logprobs cuts them back into examples): less padding computed, the same losses up to
    # float rounding.
    packed: bool = True

    def as_dict(self) -> dict:
        return asdict(self)

    def at_rate(self, method_lr: float) -> "AdapterTraining":
        """These settings with the language rate that is used: the one given, else the method's
        budget (`method_lr`); None when no language LoRA is trained (the rate plays no part)."""
        from .lora import CHOICES

        if "language" not in CHOICES.get(self.targets, ()):
            return replace(self, lr=None)
        return self if self.lr is not None else replace(self, lr=method_lr)


def train_adapter(vlm, method, train_items: pd.DataFrame, task: str, config: AdapterTraining, seed: int, load_image,
                  cache_reference: bool = True):
    """A fresh adapter on `vlm.model`, trained on the task's forget rows (and retain rows, for
    methods that use them) with their images; returns (the peft model, the loss of each step).
    `vlm.model` is the peft model afterwards, in eval mode.

    The reference of KL, NPO and PO is frozen while the adapter trains, so what it says about a row
    is computed the first time the row is drawn and kept (`ReferenceCache`); `cache_reference=False`
    recomputes it every step (the same numbers, up to float rounding: for benches and tests)."""
    import torch

    from .batching import BatchStream, token_lengths
    from .lora import attach_lora, param_groups
    from .methods.base import ReferenceCache, StepBatches

    rows = train_items[train_items["task"] == task]
    forget = rows[rows["role"] == FORGET].reset_index(drop=True)
    retain = rows[rows["role"] == RETAIN].reset_index(drop=True)
    if forget.empty or (method.uses_retain and retain.empty):
        raise ValueError(f"task {task}: no {'forget' if forget.empty else 'retain'} training items")
    model = attach_lora(vlm.model, config.targets, config.lora_rank, config.lora_alpha, seed)
    config = config.at_rate(method.lr)
    optimizer = torch.optim.AdamW(param_groups(model, {"language": config.lr, "projector": config.projector_lr,
                                                       "vision_tower": config.vision_lr}), weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)  # one generator, drawn forget then retain: one seed for both

    def stream(frame: pd.DataFrame) -> BatchStream:
        # The refusal batch has the forget batch's prompts: forget rows are grouped by their true answers.
        lengths = token_lengths(vlm.tokenizer, frame["question"], frame["answer"]) if config.length_grouped else None
        return BatchStream(len(frame), config.batch_size, generator, lengths)

    packed = config.packed and vlm.packs_sequences()

    def batch(frame: pd.DataFrame, idx: list[int], answers: list[str] | None = None) -> dict:
        part = frame.iloc[idx]
        args = ([load_image(p) for p in part["image"]], part["question"].tolist(), answers or part["answer"].tolist())
        return vlm.packed_training_batch(*args, with_spans=True) if packed else vlm.training_batch(*args)

    forget_batches = stream(forget)
    retain_batches = stream(retain) if method.uses_retain else None
    cache = ReferenceCache() if cache_reference else None
    losses = []
    vlm.model = model
    model.train()
    for _ in range(config.steps):
        idx = next(forget_batches)
        retain_idx = next(retain_batches) if retain_batches is not None else None
        batches = StepBatches(
            forget=batch(forget, idx),
            retain=batch(retain, retain_idx) if retain_idx is not None else None,
            refusal=batch(forget, idx, [REFUSAL_ANSWER] * len(idx)) if method.uses_refusal else None,
            forget_rows=idx, retain_rows=retain_idx, reference_cache=cache,
        )
        loss, _ = method.loss(model, batches)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return model, losses
