"""Where an unlearning sequence spends its time: seconds per optimisation step, and the share of
training, generation and judging, for one method on the mini profile's outputs (`make run`).
Usage: .venv/bin/python bench/unlearning.py [--method ga] [--order ABCD] [--data-dir D] [--smoke]"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _inputs import bench_arguments, load_run_outputs

from mlu_training.adapters import AdapterTraining
from mlu_training.benchmark import DEFAULT_ORDER
from mlu_training.evaluation import image_loader
from mlu_training.judge import LocalJudge
from mlu_training.lifelong import UnlearningConfig, run_sequence


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


def main(argv: list[str] | None = None) -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--method", default="ga")
    ap.add_argument("--order", default=DEFAULT_ORDER)
    ap.add_argument("--steps", type=int, default=AdapterTraining().steps)
    args = ap.parse_args(argv)
    splits, crawls, base, kept = load_run_outputs(args.data_dir, args.model)
    if args.smoke:
        args.order, args.steps = "".join(sorted(set(kept["task"])))[:2], 1
        kept = kept.groupby(["task", "role"]).head(2)
    config = UnlearningConfig(method=args.method, order=args.order, training=AdapterTraining(steps=args.steps))
    judge = TimedJudge(LocalJudge())
    marks: dict[tuple[int, str], float] = {}
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        run_sequence(base.path, splits[splits["split"] == "train"], kept, image_loader(crawls), judge, config,
                     Path(work), lambda i, task, phase: marks.__setitem__((i, phase), time.perf_counter()))
        total = time.perf_counter() - start
    train = sum(marks[(i, "evaluate")] - marks[(i, "train")] for i in range(len(args.order)))
    evaluate = sum(marks[(i, "done")] - marks[(i, "evaluate")] for i in range(len(args.order)))
    generation = evaluate - judge.seconds
    steps = args.steps * len(args.order)
    print(f"{args.method} {args.order}: {steps} optimisation steps (batch {config.training.batch_size}), "
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
