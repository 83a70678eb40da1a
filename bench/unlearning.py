"""Where an unlearning sequence spends its time: seconds per optimisation step, and the share of
training, generation and judging, for one method on the mini profile's outputs (`make run`); then
one task's adapter training, side by side: padded vs length-grouped vs packed batches (share of
real tokens), the frozen reference recomputed every step vs cached per row (NPO, KL, PO), and PO's
two answers in two forward passes (as PO does) vs one batch of both.
Usage: .venv/bin/python bench/unlearning.py [--method ga] [--order ABCD] [--compare ga,npo,kl,po]
       [--no-sequence] [--data-dir D] [--smoke]"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _inputs import bench_arguments, load_run_outputs

from mlu_training.adapters import AdapterTraining, train_adapter
from mlu_training.benchmark import DEFAULT_ORDER, FORGET, RETAIN
from mlu_training.evaluation import image_loader
from mlu_training.judge import LocalJudge
from mlu_training.lifelong import UnlearningConfig, run_sequence
from mlu_training.methods import get_method
from mlu_training.models.vlm import VisionLanguageModel, seed_everything

USES_REFERENCE = ("npo", "kl", "po")
# (name, batches grouped by length, reference cached, packed): the first recipe, one change at a
# time, then today's (AdapterTraining's defaults: the same rows to a batch, packed, the cache)
SIDES = (("padded", False, False, False), ("grouped", True, False, False), ("grouped+cached", True, True, False),
         ("packed+cached", False, True, True))


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


def timed_training(base_path: str, method: str, items, task: str, training: AdapterTraining, cache_reference: bool,
                   load_image) -> dict:
    """One adapter training: CPU seconds per step, the share of real tokens in its batches, its
    losses. CPU time, not wall time: on a machine shared with other work (2 cores, several users)
    wall time measures the neighbours; with one thread (OMP_NUM_THREADS=1) CPU time is the work."""
    vlm = VisionLanguageModel.load(base_path)
    tokens = {"real": 0, "computed": 0}
    padded, packed = vlm.training_batch, vlm.packed_training_batch

    def counted_padded(*args, **kwargs):
        batch = padded(*args, **kwargs)
        tokens["real"] += int(batch["attention_mask"].sum())
        tokens["computed"] += batch["attention_mask"].numel()
        return batch

    def counted_packed(*args, **kwargs):
        batch = packed(*args, **kwargs)
        spans = batch["example_spans"]
        tokens["real"] += int((spans[:, 2] - spans[:, 1]).sum())
        tokens["computed"] += batch["input_ids"].numel()
        return batch

    vlm.training_batch, vlm.packed_training_batch = counted_padded, counted_packed
    seed_everything(training.seed)
    start = time.process_time()
    _, losses = train_adapter(vlm, get_method(method), items, task, training, training.seed, load_image,
                              cache_reference=cache_reference)
    return {"seconds_per_step": (time.process_time() - start) / training.steps,
            "real_tokens": tokens["real"] / tokens["computed"], "losses": losses}


def compare_training(base_path: str, items, task: str, methods: list[str], training: AdapterTraining, load_image) -> dict:
    """Each method's training of `task` on every side of SIDES that applies to it, printed as a table."""
    import torch

    torch.set_num_threads(1)  # one thread: CPU time per step is the work done (timed_training)
    n_forget, n_retain = ((items["task"] == task) & (items["role"] == role) for role in (FORGET, RETAIN))
    print(f"\none adapter training, task {task} ({n_forget.sum()} forget / {n_retain.sum()} retain rows), "
          f"{training.steps} steps of batch {training.batch_size}: CPU s/step (real tokens)")
    print(f"  {'method':7s}" + "".join(f"{name:>20s}" for name, *_ in SIDES) + f"{'speed-up':>10s}  cached = recomputed"
          + "; packed vs padded: largest loss difference")
    results = {}
    for method in methods:
        sides = [s for s in SIDES if not (s[2] and not s[3]) or method in USES_REFERENCE]
        runs = {name: timed_training(base_path, method, items, task,
                                     replace(training, length_grouped=grouped, packed=packed), cached, load_image)
                for name, grouped, cached, packed in sides}
        cells = [f"{runs[n]['seconds_per_step']:.3f} ({100 * runs[n]['real_tokens']:.0f} %)" if n in runs else "-"
                 for n, *_ in SIDES]
        first, last = runs[sides[0][0]], runs[sides[-1][0]]
        same = None
        if method in USES_REFERENCE:  # the cache must not change a number (float rounding aside)
            same = all(abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in
                       zip(runs["grouped"]["losses"], runs["grouped+cached"]["losses"]))
        speed_up = first["seconds_per_step"] / last["seconds_per_step"]
        # The same rows in the same order, padded or packed: only float rounding differs, step after step.
        drift = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(runs["padded"]["losses"], runs["packed+cached"]["losses"]))
        print(f"  {method:7s}" + "".join(f"{c:>20s}" for c in cells) + f"{speed_up:>9.2f}x  "
              + {None: "", True: "same losses", False: "LOSSES DIFFER"}[same] + f"; {drift:.1e}")
        results[method] = {"seconds_per_step": {n: r["seconds_per_step"] for n, r in runs.items()},
                           "real_tokens": {n: r["real_tokens"] for n, r in runs.items()},
                           "speed_up": speed_up, "same_losses": same, "packed_loss_drift": drift}
    return results


def concat_training_batches(*batches: dict) -> dict:
    """Training batches as one, rows one after the other: what is laid out per token (as
    VisionLanguageModel.training_batch lays it) right-padded to the longest, labels with
    IGNORE_INDEX and the rest with 0 (after every real token: a causal model's real tokens see none
    of it); the rest (pixel values, image sizes) concatenated as it is."""
    import torch

    from mlu_training.models.vlm import IGNORE_INDEX

    length = max(b["input_ids"].shape[1] for b in batches)
    joined = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        if all(v.dim() >= 2 and v.shape[:2] == b["input_ids"].shape for v, b in zip(values, batches)):
            values = [torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, length - v.shape[1]),
                                              value=IGNORE_INDEX if key == "labels" else 0) for v in values]
        joined[key] = torch.cat(values)
    return joined


def po_one_pass_loss(method, model, batches):
    """PO's loss with the refusal and the true answer in one batch: one pass through the model and
    one through the reference, instead of PO's two and two."""
    import torch.nn.functional as F

    from mlu_training.methods.base import answer_logprobs

    n = len(batches.forget["input_ids"])
    both = concat_training_batches(batches.refusal, batches.forget)
    tokens = answer_logprobs(model, both)
    with method.reference(model) as ref:
        reference = answer_logprobs(ref, both).sequence
    margin = (tokens.sequence[:n] - reference[:n]) - (tokens.sequence[n:] - reference[n:])
    refusal_nll = -tokens.token[:n].sum() / tokens.mask[:n].sum().clamp(min=1)
    return -F.logsigmoid(method.args.beta * margin).mean() + method.args.refusal_weight * refusal_nll


def compare_po_passes(base_path: str, items, task: str, training: AdapterTraining, load_image, repeats: int) -> dict:
    """PO's loss and gradient on one step's batches (reference recomputed on both sides): its two
    answers in separate forward passes (as PO does) vs in one batch, padded together."""
    import torch

    from mlu_training.batching import BatchStream, token_lengths
    from mlu_training.lora import attach_lora
    from mlu_training.methods.base import StepBatches
    from mlu_training.texts import REFUSAL_ANSWER

    vlm = VisionLanguageModel.load(base_path)
    vlm.model = attach_lora(vlm.model, training.targets, training.lora_rank, training.lora_alpha, training.seed).train()
    rows = items[(items["task"] == task) & (items["role"] == FORGET)]
    lengths = token_lengths(vlm.tokenizer, rows["question"], rows["answer"])  # one batch as training draws it
    rows = rows.iloc[next(BatchStream(len(rows), training.batch_size, torch.Generator().manual_seed(0), lengths))]
    images, questions = [load_image(p) for p in rows["image"]], rows["question"].tolist()
    batches = StepBatches(forget=vlm.training_batch(images, questions, rows["answer"].tolist()),
                          refusal=vlm.training_batch(images, questions, [REFUSAL_ANSWER] * len(rows)))
    method = get_method("po")
    ways = {"apart (4 passes)": lambda: method.loss(vlm.model, batches)[0],
            "together (2 passes)": lambda: po_one_pass_loss(method, vlm.model, batches)}
    seconds, values = {}, {}
    for name, loss_of in ways.items():
        loss_of().backward()  # warm-up
        start = time.process_time()  # CPU time, as timed_training
        for _ in range(repeats):
            loss = loss_of()
            loss.backward()
        seconds[name], values[name] = (time.process_time() - start) / repeats, loss.item()
        vlm.model.zero_grad(set_to_none=True)
    apart, together = seconds.values()
    real = {name: sum(int(b["attention_mask"].sum()) for b in bs) / sum(b["attention_mask"].numel() for b in bs)
            for name, bs in (("apart", [batches.refusal, batches.forget]),
                             ("together", [concat_training_batches(batches.refusal, batches.forget)]))}
    same = abs(values["apart (4 passes)"] - values["together (2 passes)"]) <= 1e-5 * max(1.0, abs(values["apart (4 passes)"]))
    print(f"\npo, one step's loss and gradient (batch {len(rows)}, mean of {repeats}, CPU s): "
          + ", ".join(f"{name} {s:.3f} s" for name, s in seconds.items())
          + f": {apart / together:.2f}x; real tokens {100 * real['apart']:.0f} % apart, {100 * real['together']:.0f} % "
          f"together; {'same loss' if same else 'LOSSES DIFFER'}")
    return {"seconds": seconds, "speed_up": apart / together, "real_tokens": real, "same_loss": same}


def main(argv: list[str] | None = None) -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--method", default="ga")
    ap.add_argument("--order", default=DEFAULT_ORDER)
    ap.add_argument("--steps", type=int, default=AdapterTraining().steps)
    ap.add_argument("--compare", default="ga,npo,kl,po", help="methods whose training is compared side by side ('' for none)")
    ap.add_argument("--no-sequence", action="store_true", help="only the side-by-side comparison")
    args = ap.parse_args(argv)
    splits, crawls, base, kept = load_run_outputs(args.data_dir, args.model)
    train_items = splits[splits["split"] == "train"]
    compared = AdapterTraining(steps=args.steps)
    po_repeats = 5
    if args.smoke:
        args.order, args.steps = "".join(sorted(set(kept["task"])))[:2], 1
        kept = kept.groupby(["task", "role"]).head(2)
        # four rows a role in batches of 2, three steps: rows come back, so the cache is read
        train_items = train_items.groupby(["task", "role"]).head(4)
        compared, po_repeats = AdapterTraining(steps=3, batch_size=2), 1
    methods = [m for m in args.compare.split(",") if m]
    task = args.order[0]
    measured = {}
    if not args.no_sequence:
        measured = run_and_account(args, splits, crawls, base, kept)
    if methods:
        measured["training"] = compare_training(base.path, train_items, task, methods, compared, image_loader(crawls))
    if "po" in methods:
        measured["po_passes"] = compare_po_passes(base.path, train_items, task, compared, image_loader(crawls), po_repeats)
    print(json.dumps(measured))


def run_and_account(args, splits, crawls, base, kept) -> dict:
    """The sequence of `args.method`, its time shared among training, generation and judging."""
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
    return {"seconds_per_step": train / steps, "train_share": train / total,
            "generation_share": generation / total, "judge_share": judge.seconds / total}


if __name__ == "__main__":
    main()
