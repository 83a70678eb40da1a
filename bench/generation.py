"""Batched greedy generation (ours) vs one sample at a time (the reference code's way: one
`model.generate` call per item; greedy here too, so outputs can be compared), on the same items
and model, in one run. Prints tokens/s of each, the ratio, and whether every output is identical.
Usage: .venv/bin/python bench/generation.py [--items 128] [--batch-size 32] [--data-dir D] [--smoke]"""

from __future__ import annotations

import statistics
import time

import torch

from _inputs import bench_arguments, load_run_outputs

from mlu_training.evaluation import image_loader
from mlu_training.models.vlm import VisionLanguageModel
from mlu_training.threads import use_threads


@torch.inference_mode()
def reference_generate(vlm, image, question: str, max_new_tokens: int, model=None) -> str:
    """The reference code's way: one `generate` call per item (on `model`, default vlm.model)."""
    inputs = vlm.processor(text=vlm.prompts([question]), images=[image], return_tensors="pt").to(vlm.device)
    out = (model or vlm.model).generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=vlm.tokenizer.pad_token_id)
    return vlm.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--items", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="each side runs this often; medians are compared")
    args = ap.parse_args(argv)
    if args.smoke:
        args.items, args.batch_size, args.max_new_tokens, args.repeats = 8, 4, 8, 1
    use_threads()
    splits, crawls, base, _ = load_run_outputs(args.data_dir, args.model)
    items = splits[splits["split"] == "eval"].head(args.items)
    load = image_loader(crawls)
    images, questions = [load(p) for p in items["image"]], items["question"].tolist()
    vlm = VisionLanguageModel.load(base.path)
    vlm.generate(images[:2], questions[:2], max_new_tokens=4)  # warm-up, for both

    ours_times, reference_times = [], []
    for _ in range(args.repeats):  # interleaved, so that machine noise hits both alike
        t = time.perf_counter()
        ours = vlm.generate(images, questions, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        ours_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        reference = [reference_generate(vlm, im, q, args.max_new_tokens) for im, q in zip(images, questions)]
        reference_times.append(time.perf_counter() - t)
    ours_s, reference_s = statistics.median(ours_times), statistics.median(reference_times)

    tokens = sum(len(vlm.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in ours)
    same = sum(a == b for a, b in zip(ours, reference))
    print(f"items {len(items)}, generated tokens {tokens}, model {vlm.num_parameters() / 1e6:.1f} M parameters, "
          f"{vlm.device}, batch {args.batch_size}, median of {args.repeats} runs")
    print(f"ours (batched, left-padded, finished rows dropped): {ours_s:7.2f} s  {tokens / ours_s:8.1f} tokens/s")
    print(f"reference (one generate call per item):            {reference_s:7.2f} s  {tokens / reference_s:8.1f} tokens/s")
    print(f"speed-up: {reference_s / ours_s:.1f}x   identical outputs: {same}/{len(items)}")


if __name__ == "__main__":
    main()
