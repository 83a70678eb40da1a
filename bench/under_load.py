"""Generation alone vs beside a busy competing process, with OpenMP threads that sleep while they
wait (OMP_WAIT_POLICY=PASSIVE, mlu's policy: mlu_training/threads.py) and with the runtime's
default (its threads spin before they sleep). Every side runs in a fresh process (the policy is
read once, when torch loads), with torch's threads on every core, as a run alone by design does.
The competitor is one process spinning on one core: what a Dagster daemon, a UI or a test run
does to a shared machine. Prints each time and the slowdowns; the goal is at most 1.5x for ours.
Usage: .venv/bin/python bench/under_load.py [--items 64] [--data-dir D] [--smoke]"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _inputs import bench_arguments

HERE = Path(__file__).resolve().parent

# One side: load the model, warm up, time the generation of the items; prints {"seconds": …}.
# torch is imported first, so the OpenMP runtime starts with the environment this side was given
# (importing mlu_training first would set mlu's policy where none is set).
WORKLOAD = """
import torch
import json, sys, time
from _inputs import load_run_outputs
from mlu_training.evaluation import image_loader
from mlu_training.models.vlm import VisionLanguageModel
from mlu_training.threads import use_threads
data_dir, model, items, max_new_tokens, repeats = sys.argv[1] or None, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
threads = use_threads()
splits, crawls, base, _ = load_run_outputs(data_dir, model)
rows = splits[splits["split"] == "eval"].head(items)
load = image_loader(crawls)
images, questions = [load(p) for p in rows["image"]], rows["question"].tolist()
vlm = VisionLanguageModel.load(base.path)
vlm.generate(images[:4], questions[:4], max_new_tokens=4)
times = []
for _ in range(repeats):
    t = time.perf_counter()
    answers = vlm.generate(images, questions, batch_size=32, max_new_tokens=max_new_tokens)
    times.append(time.perf_counter() - t)
print(json.dumps({"seconds": sorted(times)[len(times) // 2], "threads": threads, "answers": answers}))
"""

SPIN = "while True:\n    pass\n"


def measure(policy: str | None, busy: bool, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MLU_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    competitor = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        if competitor:
            time.sleep(0.5)  # spinning before we start
        out = subprocess.run([sys.executable, "-c", WORKLOAD, str(args.data_dir or ""), args.model, str(args.items),
                              str(args.max_new_tokens), str(args.repeats)],
                             capture_output=True, text=True, env=env, cwd=HERE, check=True)
    finally:
        if competitor:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="generations per side; the median is compared")
    args = ap.parse_args(argv)
    if args.smoke:
        args.items, args.max_new_tokens, args.repeats = 8, 4, 1
    sides = {}
    for policy, name in (("PASSIVE", "ours (sleeping waits)"), (None, "runtime default (spinning waits)")):
        for busy in (False, True):
            sides[name, busy] = measure(policy, busy, args)
    threads = {s["threads"] for s in sides.values()}
    print(f"items {args.items}, {args.max_new_tokens} new tokens, torch threads {','.join(map(str, sorted(threads)))} "
          f"on {os.cpu_count()} cores, median of {args.repeats}")
    for name in ("ours (sleeping waits)", "runtime default (spinning waits)"):
        alone, busy = sides[name, False]["seconds"], sides[name, True]["seconds"]
        print(f"{name:<34} alone {alone:7.2f} s   beside a busy process {busy:7.2f} s   slowdown {busy / alone:5.2f}x")
    same = statistics.mode([json.dumps(s["answers"]) for s in sides.values()])
    print(f"identical answers on every side: {all(json.dumps(s['answers']) == same for s in sides.values())}")


if __name__ == "__main__":
    main()
