"""Batched greedy generation (ours: a KV cache and mask allocated once, finished rows replaced by
the next items) vs the previous loop (a batch at a time, its cache and mask grown by concatenation,
finished rows dropped) vs one sample at a time (the reference code's way: one `model.generate`
call per item; greedy here too, so outputs can be compared), on the same items and model, in one
run. Prints tokens/s of each, the ratios, whether every output is identical, and the decoding
steps' achieved GFLOP/s (per second of CPU time) as a share of this CPU's matmul rate on the
model's Linear layers with a full batch of rows, measured in the same run.
Usage: .venv/bin/python bench/generation.py [--items 128] [--batch-size 32] [--data-dir D] [--smoke]"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

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


def previous_greedy(vlm, batch, max_new_tokens: int, adapter_names=None) -> list[list[int]]:
    """The loop `VisionLanguageModel._greedy` was before its cache was allocated once: transformers'
    DynamicCache (grown by concatenation) and a 2-D mask grown the same way."""
    eos = vlm.tokenizer.eos_token_id
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = vlm.model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache, last = out.past_key_values, positions[:, -1]
    rows = torch.arange(mask.shape[0], device=mask.device)
    tokens: list[list[int]] = [[] for _ in range(mask.shape[0])]
    for step in range(max_new_tokens):
        chosen = out.logits[:, -1].argmax(-1)
        for row, token in zip(rows.tolist(), chosen.tolist()):
            tokens[row].append(token)
        running = chosen != eos
        if step == max_new_tokens - 1 or not running.any():
            break
        if not running.all():
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, mask, last, chosen = rows[keep], mask[keep], last[keep], chosen[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        last = last + 1
        out = vlm.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=last[:, None],
                        past_key_values=cache, use_cache=True)
    return tokens


def previous_generate(vlm, images, questions, batch_size: int, max_new_tokens: int) -> list[str]:
    """`VisionLanguageModel.generate` before: sorted by question length, one batch at a time, each
    decoded by `previous_greedy` until its last row has ended."""
    order = sorted(range(len(questions)), key=lambda i: (len(questions[i]), i))
    tokens: dict[int, list[int]] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            batch = vlm._encode_prompts([images[i] for i in idx], [questions[i] for i in idx], "left").to(vlm.device)
            tokens.update(zip(idx, previous_greedy(vlm, batch, max_new_tokens)))
    texts = vlm.tokenizer.batch_decode([tokens[i] for i in range(len(questions))], skip_special_tokens=True)
    return [t.strip() for t in texts]


class DecodeMeter:
    """Splits a generation's CPU time into prompts (the processor and the prompt's forward pass) and
    decoding (everything else: the one-token forward passes, choosing tokens, dropping rows), and
    counts the decoding steps' FLOPs and rows when `count` is on (a separate, slower pass)."""

    def __init__(self, vlm):
        self.vlm, self.prompt_cpu_s, self.flops, self.steps, self.rows, self.count = vlm, 0.0, 0, 0, 0, False

    @contextmanager
    def attached(self):
        model, vlm = self.vlm.model, self.vlm
        forward, encode = model.forward, vlm._encode_prompts

        def timed_forward(*args, **kwargs):
            ids = kwargs.get("input_ids")
            if ids is not None and ids.shape[1] == 1:  # a decoding step
                if not self.count:
                    return forward(*args, **kwargs)
                from torch.utils.flop_counter import FlopCounterMode

                self.steps, self.rows = self.steps + 1, self.rows + ids.shape[0]
                with FlopCounterMode(display=False) as counter:
                    out = forward(*args, **kwargs)
                counts = counter.get_flop_counts()["Global"]  # the Linear layers' products: attention left out
                self.flops += sum(n for op, n in counts.items() if str(op).split(".")[1] in ("mm", "addmm"))
                return out
            t = time.process_time()
            out = forward(*args, **kwargs)
            self.prompt_cpu_s += time.process_time() - t
            return out

        def timed_encode(*args, **kwargs):
            t = time.process_time()
            out = encode(*args, **kwargs)
            self.prompt_cpu_s += time.process_time() - t
            return out

        model.forward, vlm._encode_prompts = timed_forward, timed_encode
        try:
            yield self
        finally:
            del model.forward, vlm._encode_prompts  # the class's own again


def matmul_rate(model, rows: int, repeats: int = 50) -> float:
    """GFLOP/s (per second of CPU time) of this CPU on the language model's Linear layers (and its head) with `rows` rows:
    the matrix products a decoding step is made of, timed alone."""
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and ("language_model" in name or name.endswith("lm_head"))]
    inputs = [torch.randn(rows, m.in_features) for m in linears]
    flops = sum(2 * rows * m.in_features * m.out_features for m in linears)
    with torch.inference_mode():
        for m, x in zip(linears, inputs):
            torch.nn.functional.linear(x, m.weight)  # warm-up
        t = time.process_time()
        for _ in range(repeats):
            for m, x in zip(linears, inputs):
                torch.nn.functional.linear(x, m.weight)
    return repeats * flops / (time.process_time() - t) / 1e9


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
    vlm.generate(images[:2], questions[:2], max_new_tokens=4)  # warm-up, for all
    sides = {"ours": lambda: vlm.generate(images, questions, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens),
             "previous": lambda: previous_generate(vlm, images, questions, args.batch_size, args.max_new_tokens)}

    times, decode, answers = {"ours": [], "previous": [], "reference": []}, {"ours": [], "previous": []}, {}
    for _ in range(args.repeats):  # interleaved, so that machine noise hits all alike
        for side, generate in sides.items():
            meter = DecodeMeter(vlm)
            with meter.attached():
                t, cpu = time.perf_counter(), time.process_time()
                answers[side] = generate()
                times[side].append(time.perf_counter() - t)
            decode[side].append(time.process_time() - cpu - meter.prompt_cpu_s)
        t = time.perf_counter()
        answers["reference"] = [reference_generate(vlm, im, q, args.max_new_tokens) for im, q in zip(images, questions)]
        times["reference"].append(time.perf_counter() - t)
    s = {side: statistics.median(v) for side, v in times.items()}
    d = {side: statistics.median(v) for side, v in decode.items()}
    ours, previous, reference = answers["ours"], answers["previous"], answers["reference"]

    counted = {}  # the decoding steps' matmul FLOPs and rows, counted apart (counting is slow)
    for side, generate in sides.items():
        meter = DecodeMeter(vlm)
        meter.count = True
        with meter.attached():
            generate()
        counted[side] = meter
    flops = counted["ours"].flops  # the same tokens, the same rows through the same Linear layers
    rate = matmul_rate(vlm.model, args.batch_size)

    tokens = sum(len(vlm.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in ours)
    same = sum(a == b == c for a, b, c in zip(ours, previous, reference))
    print(f"items {len(items)}, generated tokens {tokens}, model {vlm.num_parameters() / 1e6:.1f} M parameters, "
          f"{vlm.device}, batch {args.batch_size}, {torch.get_num_threads()} thread(s), median of {args.repeats} runs")
    print(f"ours (cache allocated once, finished rows refilled):         {s['ours']:7.2f} s  "
          f"{tokens / s['ours']:8.1f} tokens/s")
    print(f"previous loop (cache and mask grown by concatenation):      {s['previous']:7.2f} s  "
          f"{tokens / s['previous']:8.1f} tokens/s")
    print(f"reference (one generate call per item):                     {s['reference']:7.2f} s  "
          f"{tokens / s['reference']:8.1f} tokens/s")
    print(f"over the previous loop: {s['previous'] / s['ours']:.2f}x   decoding alone: {d['previous'] / d['ours']:.2f}x")
    rows = {side: m.rows / max(m.steps, 1) for side, m in counted.items()}
    print(f"decoding: {flops / 1e9:.2f} GFLOP of matrix products; ours in {counted['ours'].steps} steps of "
          f"{rows['ours']:.1f} rows on average, the previous loop in {counted['previous'].steps} of {rows['previous']:.1f}")
    for side in ("ours", "previous"):
        print(f"decoding GFLOP/s, {side}: {flops / d[side] / 1e9:.1f} = {100 * flops / d[side] / 1e9 / rate:.0f} % "
              f"of this CPU's matmul rate at the model's Linear layers with {args.batch_size} rows ({rate:.1f} GFLOP/s)")
    print("(GFLOP/s per second of CPU time, both sides: on a shared machine, wall time counts other processes' turns)")
    print(f"speed-up: {s['reference'] / s['ours']:.1f}x   identical outputs: {same}/{len(items)}")


if __name__ == "__main__":
    main()
