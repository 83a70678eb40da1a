"""OpenAIJudge (ours: concurrent, retried, cached) vs the reference code's judge (one call at a
time, then a 2 s sleep), against a local OpenAI-compatible server with a fixed latency, on the
same items, in one run; then our cached rerun. The reference is timed on a subset (it is slow by
design) and compared per item. Usage: .venv/bin/python bench/judge.py [--items 200] [--latency 0.2] [--data-dir D] [--smoke]"""

from __future__ import annotations

import tempfile
import time

from _inputs import bench_arguments, load_run_outputs

from mlu_training.chat_api import ChatClient
from mlu_training.judge import JudgeItem, OpenAIJudge
from mlu_training.judge.prompts import parse_rating, render
from mlu_training.serving.local_openai import LocalChatServer, rubric_responder


def reference_judge(client: ChatClient, items, sleep_s: float) -> list[int | None]:
    out = []
    for it in items:
        text = client.complete([{"role": "user", "content": render("retain", it.subject, it.question, it.ground_truth, it.response)}])
        out.append(parse_rating(text))
        time.sleep(sleep_s)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--reference-items", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--sleep", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)
    if args.smoke:
        args.items, args.reference_items, args.sleep = 12, 2, 0.05
    splits, _, _, _ = load_run_outputs(args.data_dir, args.model)
    rows = splits.head(args.items)
    # Answers of every kind: correct, truncated, refusals.
    responses = [a if i % 3 == 0 else (a[: len(a) // 2] if i % 3 == 1 else "I don't know.")
                 for i, a in enumerate(rows["answer"])]
    items = [JudgeItem(s, q, gt, r) for s, q, gt, r in zip(rows["entity"], rows["question"], rows["answer"], responses)]

    with LocalChatServer(rubric_responder, latency_s=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        ref_items = items[: args.reference_items]
        t = time.perf_counter()
        ref_scores = reference_judge(ChatClient("bench", base_url=server.base_url), ref_items, args.sleep)
        ref_per_item = (time.perf_counter() - t) / len(ref_items)

        judge = OpenAIJudge("bench", base_url=server.base_url, cache_url=f"sqlite:///{tmp}/cache.db",
                            concurrency=args.concurrency)
        before = server.requests
        t = time.perf_counter()
        ours = judge.score_retain_batch(items)
        ours_per_item = (time.perf_counter() - t) / len(items)
        calls = server.requests - before
        failed = sum(j.missing for j in ours)

        before = server.requests
        t = time.perf_counter()
        rerun = OpenAIJudge("bench", base_url=server.base_url, cache_url=f"sqlite:///{tmp}/cache.db").score_retain_batch(items)
        rerun_s = time.perf_counter() - t
        rerun_calls = server.requests - before

    agree = sum(a == b.score for a, b in zip(ref_scores, ours))
    print(f"server latency {args.latency:.2f} s; ours on {len(items)} items (concurrency {args.concurrency}), "
          f"reference on {len(ref_items)} (one call, then {args.sleep:g} s sleep)")
    print(f"reference:  {ref_per_item:6.3f} s/item")
    print(f"ours:       {ours_per_item:6.3f} s/item   {calls} calls, {failed} failed")
    print(f"speed-up: {ref_per_item / ours_per_item:.0f}x   same scores on the shared items: {agree}/{len(ref_items)}")
    print(f"cached rerun: {rerun_s:.2f} s, {rerun_calls} calls, {sum(j.missing for j in rerun)} missing")


if __name__ == "__main__":
    main()
