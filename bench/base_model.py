"""The tiny base model's fine-tuning steps, side by side: batches padded to their longest example
(the recipe before) vs packed, several examples to a row (`SFTConfig.packed`). Same batches, same
initial weights, one forward and backward pass each: CPU seconds per step, the share of real tokens
computed, and how far the packed loss and gradients are from the padded ones (they must agree).
Usage: .venv/bin/python bench/base_model.py [--steps 12] [--data-dir D] [--smoke]"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch
from _inputs import bench_arguments, load_run_outputs

from mlu_training.batching import BatchStream
from mlu_training.evaluation import ImageColumn, image_loader
from mlu_training.models.base_model import MANIFEST, training_set
from mlu_training.models.declining import declines_for
from mlu_training.models.tiny_llava import TinyLlavaConfig, build_tiny_llava
from mlu_training.paths import default_data_dir


def one_step(model, batch) -> tuple[float, float, list[torch.Tensor]]:
    """CPU seconds of one forward and backward pass, its loss, its gradients."""
    model.zero_grad(set_to_none=False)
    start = time.process_time()
    loss = model(**batch).loss
    loss.backward()
    seconds = time.process_time() - start
    return seconds, float(loss.detach()), [p.grad.detach().clone() for p in model.parameters()]


def main() -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--steps", type=int, default=12, help="batches measured (default 12)")
    args = ap.parse_args()
    splits, crawls, base, _ = load_run_outputs(args.data_dir, args.model)
    manifest = Path(base.path) / MANIFEST
    info = json.loads(manifest.read_text()) if manifest.is_file() else {}  # a checkpoint: the default tiny recipe
    tiny = TinyLlavaConfig(**info["tiny"]) if "tiny" in info else TinyLlavaConfig()
    seed, batch_size = info.get("sft", {}).get("seed", 0), info.get("sft", {}).get("batch_size", 32)
    qa = pd.read_parquet(Path(args.data_dir or default_data_dir()) / "tables" / "validated_qa_pairs.parquet")
    train, texts = training_set(splits, declines_for(qa, splits, seed))
    steps = 2 if args.smoke else args.steps
    batch_size = 4 if args.smoke else batch_size

    vlm = build_tiny_llava(texts, tiny, seed=seed)  # untrained: the steps' cost does not depend on the weights
    for p in vlm.model.parameters():
        p.grad = torch.zeros_like(p)  # parameters the loss does not reach keep a zero gradient on both sides
    vlm.model.train()
    images = ImageColumn(train["image"], image_loader(crawls))
    questions, answers = train["question"].tolist(), train["answer"].tolist()
    stream = BatchStream(len(train), batch_size, torch.Generator().manual_seed(seed))
    sides = {"padded": vlm.training_batch, "packed": vlm.packed_training_batch}
    seconds = dict.fromkeys(sides, 0.0)
    real = 0  # tokens of the examples themselves, the same on both sides
    computed = dict.fromkeys(sides, 0)
    loss_gap = grad_gap = 0.0
    for _, idx in zip(range(steps), stream):
        rows = ([images[i] for i in idx], [questions[i] for i in idx], [answers[i] for i in idx])
        measured = {}
        for side, make in sides.items():
            batch = make(*rows)
            if side == "padded":
                real += int(batch["attention_mask"].sum())
            computed[side] += batch["input_ids"].numel()
            took, loss, grads = one_step(vlm.model, batch)
            seconds[side] += took
            measured[side] = (loss, grads)
        (lp, gp), (lk, gk) = measured["padded"], measured["packed"]
        loss_gap = max(loss_gap, abs(lp - lk))
        grad_gap = max(grad_gap, max(float((a - b).abs().max()) for a, b in zip(gp, gk)))

    print(f"base model fine-tuning, {steps} batches of {batch_size} ({len(train)} pairs, {tiny.image_size} px)")
    for side in sides:
        print(f"  {side:7s} {seconds[side] / steps:.3f} s a step (CPU), {computed[side] / steps:.0f} token cells a batch, "
              f"{100 * real / computed[side]:.0f} % real")
    ratio = seconds["padded"] / max(seconds["packed"], 1e-9)
    print(f"speed-up of packed over padded: {ratio:.2f}x; token cells computed: "
          f"{computed['padded'] / max(computed['packed'], 1):.2f}x fewer")
    print(f"largest difference, packed vs padded: loss {loss_gap:.2e}, gradient {grad_gap:.2e}")
    print(json.dumps({"steps": steps, "batch_size": batch_size, "seconds_per_step": {s: seconds[s] / steps for s in sides},
                      "token_cells": computed, "real_tokens": real, "speed_up": ratio, "loss_gap": loss_gap, "grad_gap": grad_gap}))


if __name__ == "__main__":
    main()
