"""Supervised fine-tuning with images: how the tiny base model learns the benchmark's entities."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..batching import BatchStream, token_lengths
from .vlm import VisionLanguageModel, seed_everything


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 0
    # Off: grouped by length, mini's 300 steps ran 2.2x faster but ended at loss 0.45 (plain: 0.02),
    # declining 66 % of known items and keeping 24/320 (plain: 14 %, 246/320): refusals and each
    # class's questions have their own lengths, so grouped batches are of one kind.
    length_grouped: bool = False
    # On: the same batches, several examples to a row (VisionLanguageModel.packed_training_batch)
    # where the family allows it. Mini's batches were 46 % real tokens, packed 91 %, and a forward
    # and backward pass took 2.16x less time, the loss equal to 1e-6 (bench/unlearning.py).
    packed: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def train_sft(vlm: VisionLanguageModel, images: Sequence[Image.Image], questions: Sequence[str],
              answers: Sequence[str], config: SFTConfig, progress: Callable[[int, float], None] | None = None,
              checkpoint: Path | None = None, checkpoint_every: int = 100) -> list[float]:
    """Full fine-tuning on (image, question, answer) triples; returns the loss of every step.

    Batches come from a seeded `BatchStream` (grouped by length where the config says so), so the
    same seed gives the same model.

    `checkpoint` (a file): the training state is saved there every `checkpoint_every` steps, and a
    state found there is resumed, so a long fine-tuning (`full`: hours on a CPU) that is stopped
    goes on where it was instead of starting again. Resumed or not, the model is the same (tested):
    the weights, the optimizer's moments, the schedule, the random state and the losses so far are
    saved, and the batch stream is replayed to the step reached. The caller keys the file by its
    recipe and removes it once the model is saved.
    """
    seed_everything(config.seed)
    model = vlm.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, cosine decay
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        done = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    lengths = token_lengths(vlm.tokenizer, questions, answers) if config.length_grouped else None
    batches = BatchStream(len(questions), config.batch_size, torch.Generator().manual_seed(config.seed), lengths)
    make_batch = vlm.packed_training_batch if config.packed and vlm.packs_sequences() else vlm.training_batch
    losses: list[float] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")  # saved on a GPU, resumed anywhere
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        losses = state["losses"].tolist()
        for _ in range(len(losses)):  # the stream is seeded: replaying it reaches the same batch
            next(batches)
    for step, idx in zip(range(len(losses), config.steps), batches):
        batch = make_batch([images[i] for i in idx], [questions[i] for i in idx], [answers[i] for i in idx])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress:
            progress(step, losses[-1])
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < config.steps:
            _save_state(Path(checkpoint), model, optimizer, scheduler, losses)
    model.eval()
    return losses


def _save_state(path: Path, model, optimizer, scheduler, losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(), "losses": torch.tensor(losses, dtype=torch.float64)}, tmp)
    os.replace(tmp, path)  # a state cut off half-written is never found at `path`
