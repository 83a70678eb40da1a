"""LUMoE serving, side by side on the same items in one run:
- routed evaluation (every expert loaded beside one base model; grouped by route, or one mixed
  batch) vs the base model alone, batched: throughput ratio;
- vs the reference code's way: a deep copy of the whole model per adapter, one sample at a time;
- the extra memory each expert costs, over the size of its adapter file;
- the LUMoE sequence (one request after another, every item evaluated after each) with its
  answers generated once per (model state, route, item, decoding settings) vs generated again
  at every step: generations, time, and whether every evaluation is the same.
Routes are the oracle's (the router is not what is timed here). Needs `make run` first.
Usage: .venv/bin/python bench/lumoe.py [--reference-items 48] [--data-dir D] [--smoke]"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import psutil
from _inputs import bench_arguments, load_run_outputs
from generation import reference_generate

from mlu_training.benchmark import TASKS
from mlu_training.evaluation import image_loader
from mlu_training.judge.local import LocalJudge
from mlu_training.lumoe.answers import AnswerCache
from mlu_training.lumoe.mixture import ExpertMixture
from mlu_training.lumoe.registry import registered_experts
from mlu_training.lumoe.sequence import LumoeConfig, run_lumoe_sequence
from mlu_training.mlflow_store import MlflowStore
from mlu_training.threads import use_threads
from mlu_training.paths import default_tracking_uri
from mlu_training.router import Registry
from mlu_training.router.oracle import OracleRouter


def rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


def main(argv: list[str] | None = None) -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--reference-items", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args(argv)
    use_threads()
    _, crawls, base, items = load_run_outputs(args.data_dir, args.model)
    if args.smoke:
        items, args.reference_items, args.max_new_tokens = items.head(8), 4, 8
    store = MlflowStore(os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    experts = {t: e for t, e in registered_experts(store, args.model).items() if t in TASKS}
    if not experts:
        raise SystemExit(f"bench: no expert of base model {args.model!r} registered at {store.tracking_uri}; run `make run` first")
    registry = Registry({t: e.entities for t, e in experts.items()}, {})
    routes = [registry.task_of(e) for e in items["entity_id"]]
    load = image_loader(crawls)
    images, questions = [load(p) for p in items["image"]], items["question"].tolist()
    opts = {"max_new_tokens": args.max_new_tokens}

    mixture = ExpertMixture(base.path)
    mixture.vlm.generate(images[:2], questions[:2], max_new_tokens=4)  # warm-up
    before = rss()
    lora_bytes, file_bytes = [], []
    for task, e in experts.items():
        params_before = sum(p.numel() * p.element_size() for p in mixture.vlm.model.parameters())
        mixture.add_expert(task, e.adapter)
        lora_bytes.append(sum(p.numel() * p.element_size() for p in mixture.vlm.model.parameters()) - params_before)
        file_bytes.append(sum(f.stat().st_size for f in Path(e.adapter).glob("*.safetensors")))
    rss_per_expert = (rss() - before) / len(experts)

    timings = {}
    with mixture.vlm.model.disable_adapter():
        t = time.perf_counter()
        base_answers = mixture.vlm.generate(images, questions, **opts)
        timings["base"] = time.perf_counter() - t
    for mode in ("grouped", "mixed"):
        t = time.perf_counter()
        answers = mixture.generate(images, questions, routes, mode=mode, **opts)
        timings[mode] = time.perf_counter() - t
        timings[mode + "_answers"] = answers

    # The reference: a full copy of the model per adapter, one sample at a time.
    from peft import PeftModel

    copies, copy_rss_before = {}, rss()
    plain = ExpertMixture(base.path).vlm
    for task, e in experts.items():
        copies[task] = PeftModel.from_pretrained(copy.deepcopy(plain.model), e.adapter).eval()
    copy_rss = (rss() - copy_rss_before) / len(experts)
    n = args.reference_items
    t = time.perf_counter()
    reference = [reference_generate(plain, im, q, args.max_new_tokens, model=copies[r] if r else None)
                 for im, q, r in zip(images[:n], questions[:n], routes[:n])]
    reference_per_item = (time.perf_counter() - t) / n

    # The sequence, answers cached vs generated at every step (the judge is the offline one).
    sequence = {}
    for cached in (False, True):
        answers = AnswerCache(enabled=cached)
        t = time.perf_counter()
        result, _ = run_lumoe_sequence(base.path, {task: (e.adapter, e.entities) for task, e in experts.items()}, {},
                                       items, load, LocalJudge(), lambda vlm, registry: OracleRouter(registry),
                                       LumoeConfig(tasks=tuple(experts), router="oracle", max_new_tokens=args.max_new_tokens),
                                       answers=answers)
        sequence[cached] = (time.perf_counter() - t, answers.generated, result.evaluations)

    same = sum(a == b for a, b in zip(reference, timings["grouped_answers"][:n]))
    per_item = {k: timings[k] / len(items) for k in ("base", "grouped", "mixed")}
    print(f"{len(items)} items, {len(experts)} experts, {sum(r is not None for r in routes)} routed to an expert")
    print(f"base model alone (batched):   {per_item['base'] * 1000:7.1f} ms/item")
    print(f"LUMoE grouped by route:       {per_item['grouped'] * 1000:7.1f} ms/item  "
          f"= {per_item['base'] / per_item['grouped']:.2f} of base throughput")
    print(f"LUMoE one mixed batch:        {per_item['mixed'] * 1000:7.1f} ms/item  "
          f"= {per_item['base'] / per_item['mixed']:.2f} of base throughput")
    print(f"reference (copy per adapter, one at a time, {n} items): {reference_per_item * 1000:7.1f} ms/item; "
          f"grouped is {reference_per_item / per_item['grouped']:.1f}x faster; same answers {same}/{n}")
    print(f"memory per expert: {sum(lora_bytes) / len(lora_bytes) / 1e6:.2f} MB of tensors for a "
          f"{sum(file_bytes) / len(file_bytes) / 1e6:.2f} MB adapter file "
          f"(ratio {sum(lora_bytes) / sum(file_bytes):.2f}); process memory +{rss_per_expert / 1e6:.1f} MB per expert "
          f"(ratio {rss_per_expert * len(experts) / sum(file_bytes):.2f}), vs +{copy_rss / 1e6:.1f} MB per deep copy")
    (plain_s, plain_n, plain), (cached_s, cached_n, cached) = sequence[False], sequence[True]
    print(f"sequence of {len(experts)} requests over {len(items)} items: generated at every step {plain_n} answers in "
          f"{plain_s:.2f} s; cached {cached_n} ({100 * (1 - cached_n / plain_n):.0f} % saved) in {cached_s:.2f} s "
          f"= {plain_s / cached_s:.2f}x; same evaluations: {plain.equals(cached)}")


if __name__ == "__main__":
    main()
