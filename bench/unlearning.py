"""Where an unlearning sequence spends its time: seconds per optimisation step, and the share of
training, generation and judging, for one method on the mini profile's outputs (`make run`).
Usage: .venv/bin/python bench/unlearning.py [--method ga] [--order ABCD]"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from _inputs import load_run_outputs

from mlu_training.evaluation import image_loader
from mlu_training.judge import LocalJudge
from mlu_training.lifelong import UnlearningConfig, run_sequence
from mlu_training.paths import default_data_dir


class TimedJudge:
    """The judge, with the time spent in it counted."""

    def __init__(self, judge):
        self.judge, self.seconds = judge, 0.0

    def score_batch(self, kind, items):
        t = time.perf_counter()
        try:
            return self.judge.score_batch(kind, items)
        finally:
            self.seconds += time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="ga")
    ap.add_argument("--order", default="ABCD")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    splits, crawls, base = load_run_outputs()
    kept = pd.read_parquet(Path(default_data_dir()) / "tables" / "knowledge_filter.parquet")
    config = UnlearningConfig(method=args.method, order=args.order, steps=args.steps)
    judge = TimedJudge(LocalJudge())
    marks: dict[tuple[int, str], float] = {}
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        run_sequence(base["path"], splits[splits["split"] == "train"], kept, image_loader(crawls), judge, config,
                     Path(work), lambda i, task, phase: marks.__setitem__((i, phase), time.perf_counter()))
        total = time.perf_counter() - start
    train = sum(marks[(i, "evaluate")] - marks[(i, "train")] for i in range(len(args.order)))
    evaluate = sum(marks[(i, "done")] - marks[(i, "evaluate")] for i in range(len(args.order)))
    generation = evaluate - judge.seconds
    steps = args.steps * len(args.order)
    print(f"{args.method} {args.order}: {steps} optimisation steps (batch {config.batch_size}), "
          f"{len(kept)} evaluation items x {len(args.order)} evaluations, {total:.1f} s in all")
    print(f"seconds per optimisation step: {train / steps:.3f}")
    rest = total - train - evaluate
    for name, seconds in (("training (incl. merge)", train), ("generation (incl. checkpoint)", generation),
                          ("judging", judge.seconds), ("loading, other", rest)):
        print(f"  {name:32s} {seconds:6.1f} s  {100 * seconds / total:5.1f} %")
    print(json.dumps({"seconds_per_step": train / steps, "train_share": train / total,
                      "generation_share": generation / total, "judge_share": judge.seconds / total}))


if __name__ == "__main__":
    main()
