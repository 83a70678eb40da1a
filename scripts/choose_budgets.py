"""How each unlearning method's budget (`UnlearningMethod.lr`, its language-model LoRA rate) was
chosen: the first request only (task A of the default order, the shared 20 steps of batch 8), at
each rate of a ladder, on a finished run's base model; the share of that task's forgotten items
still answered correctly afterwards (forget correctness), its forget quality and utility. A
method's budget is the smallest rate that leaves at most half answered (the base model answers
all of them: they are the items its knowledge filter kept). The rule looks at the first request
alone, so every later cell of a sequence is a consequence, not a target; the same rate serves
every task and every order.
Usage: .venv/bin/python scripts/choose_budgets.py [--data-dir D] [--methods ga,npo] [--rates 3e-4,6e-4] [--smoke]"""

from __future__ import annotations

import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from _inputs import bench_arguments, load_run_outputs  # noqa: E402

RATES = (3e-4, 4.2e-4, 6e-4, 8.5e-4, 1.2e-3)  # steps of about √2
MAX_STILL_ANSWERED = 0.5  # of the first task's forgotten items, after its request


@cache
def run_inputs(data_dir: Path | None, model: str):
    """(train items, the first task's kept items, the picture loader, the judge, the base model
    path, the task): read once per worker process, whatever number of rates it runs."""
    import pandas as pd

    from mlu_training.benchmark import DEFAULT_ORDER
    from mlu_training.evaluation import image_loader
    from mlu_training.judge import LocalJudge
    from mlu_training.paths import default_data_dir

    splits, crawls, base, known = load_run_outputs(data_dir, model)
    qa = pd.read_parquet(Path(data_dir or default_data_dir()) / "tables" / "validated_qa_pairs.parquet")
    task = next(t for t in DEFAULT_ORDER if t in set(known["task"]))
    return (splits[splits["split"] == "train"], known[known["task"] == task], image_loader(crawls),
            LocalJudge.from_qa(qa), base.path, task)


def first_request(data_dir: Path | None, model: str, method: str, rate: float, steps: int, work_dir: Path) -> dict:
    """Task A's forget correctness, forget quality and utility after the first request alone."""
    from mlu_training.adapters import AdapterTraining
    from mlu_training.lifelong import UnlearningConfig, run_sequence
    from mlu_training.threads import use_threads

    use_threads(1)  # two at a time on two cores
    train, kept, load_image, judge, base_path, task = run_inputs(data_dir, model)
    config = UnlearningConfig(method, order=task, training=AdapterTraining(steps=steps, lr=rate))
    result = run_sequence(base_path, train, kept, load_image, judge, config, work_dir / f"{method}-{rate}")
    cell = f"{task}-U{task}"
    metrics = result.metrics()
    return {"method": method, "rate": rate, "task": task,
            **{name: metrics[f"{name}/{cell}"] for name in ("forget_correctness", "forget_quality", "utility")}}


def main() -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--methods", default="ga,npo,gd,kl,idk,po")
    ap.add_argument("--rates", default=",".join(map(str, RATES)))
    ap.add_argument("--steps", type=int, default=None, help="steps of the first request (default: AdapterTraining's)")
    args = ap.parse_args()
    from mlu_training.adapters import AdapterTraining

    methods, rates = args.methods.split(","), [float(r) for r in args.rates.split(",")]
    steps = 2 if args.smoke else (args.steps or AdapterTraining().steps)
    if args.smoke:
        rates = rates[:2]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(first_request, args.data_dir, args.model, m, r, steps, Path(tmp)) for r in rates for m in methods]
        rows = [job.result() for job in jobs]
    print(f"first request ({rows[0]['task']}, {steps} steps of batch {AdapterTraining().batch_size}): "
          f"forget correctness / forget quality / utility on it, by rate")
    chosen = {}
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["rate"])
        cells = "  ".join(f"{r['rate']:g}: {r['forget_correctness']:.2f}/{r['forget_quality']:.2f}/{r['utility']:.2f}"
                          for r in mine)
        chosen[method] = next((r["rate"] for r in mine if r["forget_correctness"] <= MAX_STILL_ANSWERED), None)
        print(f"  {method:4s} {cells}  -> {chosen[method] if chosen[method] is not None else 'none of these'}")
    print(json.dumps({"steps": steps, "rows": rows, "chosen": chosen}))


if __name__ == "__main__":
    main()
