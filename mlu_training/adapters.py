"""Training one LoRA adapter for one unlearning task: shared by the baselines (which then merge
it into the backbone) and by LUMoE (which keeps it apart, as an expert)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from .benchmark import FORGET, RETAIN
from .texts import REFUSAL_ANSWER


@dataclass(frozen=True)
class AdapterTraining:
    """How one LoRA adapter is trained, whatever the method: the baselines' steps and LUMoE's
    experts share this (each with its own defaults); a method's own hyperparameters are its Args.
    The rates suit the tiny model; for LLaVA-7B use the paper's (projector 1e-5, vision 2e-6)."""

    steps: int = 20  # optimisation steps per task
    batch_size: int = 8
    lr: float = 3e-4  # language-model LoRA (the tiny model; GA at this rate collapses gradually, as in the paper)
    projector_lr: float = 1e-3
    vision_lr: float = 1e-4
    lora_rank: int = 32  # the paper's rank and alpha
    lora_alpha: int = 32
    targets: str = "language"  # language | projector | vision_tower | vision | both
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def train_adapter(vlm, method, train_items: pd.DataFrame, task: str, config: AdapterTraining, seed: int, load_image):
    """A fresh adapter on `vlm.model`, trained on the task's forget rows (and retain rows, for
    methods that use them) with their images; returns (the peft model, the loss of each step).
    `vlm.model` is the peft model afterwards, in eval mode."""
    import torch

    from .lora import attach_lora, param_groups
    from .methods.base import StepBatches

    rows = train_items[train_items["task"] == task]
    forget = rows[rows["role"] == FORGET].reset_index(drop=True)
    retain = rows[rows["role"] == RETAIN].reset_index(drop=True)
    if forget.empty or (method.uses_retain and retain.empty):
        raise ValueError(f"task {task}: no {'forget' if forget.empty else 'retain'} training items")
    model = attach_lora(vlm.model, config.targets, config.lora_rank, config.lora_alpha, seed)
    optimizer = torch.optim.AdamW(param_groups(model, {"language": config.lr, "projector": config.projector_lr,
                                                       "vision_tower": config.vision_lr}), weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    queues: dict[str, list[int]] = {"forget": [], "retain": []}

    def draw(name: str, n_rows: int) -> list[int]:  # a seeded permutation, epoch after epoch
        if len(queues[name]) < config.batch_size:
            queues[name] += torch.randperm(n_rows, generator=generator).tolist()
        take, queues[name] = queues[name][: config.batch_size], queues[name][config.batch_size:]
        return take

    def batch(frame: pd.DataFrame, idx: list[int], answers: list[str] | None = None) -> dict:
        part = frame.iloc[idx]
        return vlm.training_batch([load_image(p) for p in part["image"]], part["question"].tolist(),
                                  answers or part["answer"].tolist())

    losses = []
    vlm.model = model
    model.train()
    for _ in range(config.steps):
        idx = draw("forget", len(forget))
        batches = StepBatches(
            forget=batch(forget, idx),
            retain=batch(retain, draw("retain", len(retain))) if method.uses_retain else None,
            refusal=batch(forget, idx, [REFUSAL_ANSWER] * len(idx)) if method.uses_refusal else None,
        )
        loss, _ = method.loss(model, batches)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return model, losses
