"""mlu's in-project pipeline on a GPU, in one command, measured stage by stage against the CPU run
it was prepared from: the pictures re-rendered, the tiny base model fine-tuned as the `base_model`
asset does (seconds, s/step, peak GPU memory, tokens/s, MFU, final loss), the knowledge filter and
the calibration (kept items, refusals), one GA sequence (task A after each step) and batched
generation (tokens/s). Each stage's failure is recorded (traceback) and the stages that do not
need it still run; the JSON is written after every stage, and on SIGTERM (a `timeout`).

Inputs are small tables only (`--data-dir D`: D/tables as `make run` leaves them, and
D/cpu_reference.json, both written here by --prepare): no release, no pictures, no MLflow, no
Dagster. Nothing it imports at any point needs dagster, mlflow, great_expectations, trl, openai or
sqlalchemy (tests/test_bench.py runs it with those unimportable).

Usage: python bench/gpu.py [--profile mini] [--data-dir D] [--out F] [--device cuda|cpu]
                           [--max-steps N] [--deadline S] [--smoke]
       python bench/gpu.py --prepare RUN_DATA_DIR --profile mini   (the inputs, from a finished run)

How the README's H200 numbers were taken: a machine with torch (CUDA) and no network, no Dagster
or MLflow. `--prepare` wrote .gpu/mini and .gpu/full here; our pinned transformers, peft,
tokenizers, huggingface-hub, safetensors and what they and the judge import (regex, nltk,
rouge_score, httpx2 and its own) went as wheels (`pip download --no-deps --only-binary=:all:
--python-version 3.12 ... -d .whl NAME==VERSION`, 23 MB), and the command there was
  pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
  timeout 120 python3 bench/gpu.py --profile mini --out gpu_mini.json
  timeout 320 python3 bench/gpu.py --profile full --deadline 305 --out gpu_full.json"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd

from mlu_training.data.crawls import synthetic_dir
from mlu_training.data.records import IMAGE_PATH
from mlu_training.data.render import RENDERER_VERSION, png_bytes, render_image
from mlu_training.paths import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("benchmark_splits.parquet", "raw_crawls.parquet", "validated_qa_pairs.parquet",
          "knowledge_filter/tiny.parquet", "base_model/tiny.json")
REFERENCE = "cpu_reference.json"
# Peak dense rates of one H200 (SXM): bf16 on the tensor cores, and float32 without them (what
# fine-tuning in float32 runs at: torch leaves TF32 matmuls off by default).
PEAK_BF16 = 989e12
PEAK_FP32 = 67e12
STAGES = ("render", "base_model", "knowledge_filter", "ga_sequence", "generation")
# What the README measured on 2 CPU cores (`full`: the table of "The `full` profile on a CPU";
# mini: `bench/unlearning.py`), for seconds side by side. `full`'s base model on idle cores (its
# latest run shared the machine); GA at its budget (8.5e-4), mini's with packed adapter batches.
README_CPU = {
    "full": {"cores": 2, "base_model_seconds_per_step": 0.56, "base_model_filter_calibration_seconds": 1527,
             "ga_sequence_seconds": 256, "ga_note": "two baselines side by side, one core each"},
    "mini": {"cores": 2, "ga_sequence_seconds": 44.9},
}


class Stopped(BaseException):
    """SIGTERM (a `timeout`) or the --deadline: the stage stops, what it measured is kept. A
    BaseException, so that no `except Exception` on the way swallows it."""


def _on_sigterm(signum, frame):
    raise Stopped("stopped by SIGTERM (the command's timeout?)")


# -- inputs ------------------------------------------------------------------------------------
def pixel_digest(payload: bytes) -> str:
    """sha256 of a picture's decoded RGB pixels: what the model sees, whatever PNG encoder wrote it."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as im:
        return hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest()


def prepare(run_data_dir: Path, data_dir: Path, profile: str) -> None:
    """The device's inputs from a finished run (here, where its models and pictures are): its tables,
    and the CPU numbers to compare with (the base model's manifest, its calibration and kept count,
    the GA sequence's metrics, each picture's pixel digest)."""
    src = Path(run_data_dir) / "tables"
    for name in TABLES:
        (data_dir / "tables" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, data_dir / "tables" / name)
    base = json.loads((src / "base_model" / "tiny.json").read_text())
    from mlu_training.models.base_model import MANIFEST

    manifest = json.loads((Path(base["path"]) / MANIFEST).read_text())
    splits = pd.read_parquet(src / "benchmark_splits.parquet")
    crawls = pd.read_parquet(src / "raw_crawls.parquet")
    reference = {"profile": profile, "source": str(run_data_dir), "manifest": manifest,
                 "base_model": {k: v for k, v in base.items() if k != "path"},
                 "kept": len(pd.read_parquet(src / "knowledge_filter" / "tiny.parquet")),
                 "eval_items": int((splits["split"] == "eval").sum()), "readme_cpu": README_CPU.get(profile, {}),
                 "pixel_sha256": {image: pixel_digest(Path(file).read_bytes())
                                  for image, file in zip(crawls["image"], crawls["file"])}}
    ga = src / "unlearning_sequence" / "ga" / "tiny.json"
    if ga.is_file():
        summary = json.loads(ga.read_text())
        from mlu_training.lifelong import UnlearningConfig

        # The rate GA ran at: today's budget, so prepare right after the run it is taken from.
        reference["ga"] = {"order": summary["order"], "sequence_key": summary["sequence_key"],
                           "lr": UnlearningConfig("ga").as_dict()["training"]["lr"],
                           "metrics": {k: v for k, v in summary["metrics"].items() if "/ci_" not in k}}
    (data_dir / REFERENCE).write_text(json.dumps(reference))
    print(f"prepared {data_dir}: {len(TABLES)} tables, reference of {len(crawls)} pictures, "
          f"{len(manifest['train_losses'])} CPU losses, GA metrics: {'ga' in reference}")


def _render_one(job: tuple) -> str:
    """How one picture was had: reused (on disk, same bytes), rendered, or pixels (the
    bytes differ, the pixels are those of the CPU run); a picture like none of those raises."""
    image, target, size, seed, sha256, pixels = job
    target = Path(target)
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return "reused"
    m = IMAGE_PATH.match(image)
    payload = png_bytes(render_image(m["cls"], m["entity"], image, size=size, seed=seed))
    atomic_write_bytes(target, payload)
    if hashlib.sha256(payload).hexdigest() == sha256:
        return "rendered"
    if pixels and pixel_digest(payload) == pixels:
        return "pixels"
    raise ValueError(f"{image}: re-rendered at {size} px (seed {seed}) it is not the CPU run's picture "
                     f"(sha256 {hashlib.sha256(payload).hexdigest()[:16]}…, expected {sha256[:16]}…)")


def render_pictures(crawls: pd.DataFrame, data_dir: Path, pixels: dict[str, str], entry: dict) -> pd.DataFrame:
    """Every picture raw_crawls names, under data_dir's images/ (rendered where missing, in parallel,
    each checked against the CPU run's sha256); returns the crawls pointing at them."""
    where = re.compile(rf"/images/{re.escape(RENDERER_VERSION)}-(\d+)px-seed(\d+)/(.+)$")
    jobs, files = [], []
    for image, file, sha256 in zip(crawls["image"], crawls["file"], crawls["sha256"]):
        m = where.search(str(file))
        if m is None:  # an official photograph: it cannot be rendered
            if not Path(file).is_file():
                raise FileNotFoundError(f"{image}: {file} is not a synthetic render and is not on this machine")
            files.append(file)
            continue
        size, seed = int(m[1]), int(m[2])
        target = synthetic_dir(data_dir, size, seed) / m[3]
        jobs.append((image, str(target), size, seed, sha256, pixels.get(image)))
        files.append(str(target))
        entry["size_px"] = size
    workers = max(1, min(len(os.sched_getaffinity(0)), len(jobs) // 100))
    if workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            done = list(pool.map(_render_one, jobs, chunksize=32))
    else:
        done = [_render_one(job) for job in jobs]
    hows = pd.Series(done, dtype=str)
    entry.update(pictures=len(crawls), rendered=int((hows != "reused").sum()), reused=int((hows == "reused").sum()),
                 png_differs_pixels_same=int((hows == "pixels").sum()), workers=workers)
    return crawls.assign(file=files)


# -- the run -----------------------------------------------------------------------------------
class GpuBench:
    def __init__(self, args):
        self.args = args
        self.data_dir = Path(args.data_dir or ROOT / ".gpu" / args.profile)
        tables = self.data_dir / "tables"
        missing = [n for n in TABLES if not (tables / n).is_file()]
        if missing:
            sys.exit(f"gpu bench: {', '.join(missing)} not found under {tables} (--prepare RUN_DATA_DIR makes them)")
        self.splits = pd.read_parquet(tables / "benchmark_splits.parquet")
        self.crawls = pd.read_parquet(tables / "raw_crawls.parquet")
        self.qa = pd.read_parquet(tables / "validated_qa_pairs.parquet")
        self.cpu_kept = pd.read_parquet(tables / "knowledge_filter" / "tiny.parquet")
        self.cpu_base = json.loads((tables / "base_model" / "tiny.json").read_text())
        ref_file = Path(args.reference) if args.reference else self.data_dir / REFERENCE
        self.reference = json.loads(ref_file.read_text()) if ref_file.is_file() else {}
        self.eval_items = self.splits[self.splits["split"] == "eval"]
        self.train_items = self.splits[self.splits["split"] == "train"]
        if args.smoke:  # a few items a task side: checks every stage runs, measures nothing
            self.eval_items = self.eval_items.groupby(["task", "role"]).head(2)
        self.work = Path(tempfile.mkdtemp(prefix="mlu-gpu-", dir=args.work_dir))
        self.start = time.perf_counter()
        self.result = {"profile": args.profile, "smoke": args.smoke, "data_dir": str(self.data_dir),
                       "capped_steps": args.max_steps, "stages": {}}
        self.state: dict = {}  # what later stages use: crawls, the base model, the kept items

    # -- plumbing ------------------------------------------------------------------------------
    def save(self) -> None:
        self.result["total_seconds"] = round(time.perf_counter() - self.start, 2)
        if self.args.out:
            Path(self.args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.out).write_text(json.dumps(self.result, indent=1, default=str))

    def stage(self, name: str, run, needs: tuple[str, ...] = ()) -> None:
        entry = self.result["stages"][name] = {"ok": False}
        missing = [n for n in needs if n not in self.state]
        late = self.args.deadline and time.perf_counter() - self.start > self.args.deadline
        if missing or late:
            entry["error"] = (f"skipped: needs {', '.join(missing)} (an earlier stage failed)" if missing
                              else f"skipped: past --deadline {self.args.deadline} s")
            print(f"[{name}] {entry['error']}")
            self.save()
            return
        cuda = self.device == "cuda" and name != "render"  # the renders fork: CUDA is not started before them
        if cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        stopped = None
        try:
            run(entry)
            entry["ok"] = True
        except Stopped as why:
            entry["error"], stopped = str(why), why
        except Exception:  # noqa: BLE001 - one stage's failure is a result; the others still run
            entry["error"] = traceback.format_exc()
        entry["seconds"] = round(time.perf_counter() - start, 2)
        if cuda:
            entry["peak_gpu_memory_mb"] = round(self.torch.cuda.max_memory_allocated() / 2**20, 1)
            entry["peak_gpu_reserved_mb"] = round(self.torch.cuda.max_memory_reserved() / 2**20, 1)
        print(f"[{name}] {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']:.1f} s"
              + ("" if entry["ok"] else f": {entry['error'].strip().splitlines()[-1]}"), flush=True)
        self.save()
        if stopped is not None and "SIGTERM" in str(stopped):
            self.summary()
            sys.exit(124)

    def check_deadline(self, what: str) -> None:
        if self.args.deadline and time.perf_counter() - self.start > self.args.deadline:
            raise Stopped(f"stopped by --deadline {self.args.deadline} s during {what}")

    def run(self) -> None:
        import torch

        self.torch = torch
        if self.args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("gpu bench: --device cuda, but torch sees no CUDA device")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar a saved model in the device's log
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            self.stage("render", self.render)
            self.result["environment"] = environment(torch, self.device)  # starts CUDA: after the renders' fork
            self.stage("base_model", self.base_model, needs=("crawls",))
            self.stage("knowledge_filter", self.knowledge_filter, needs=("crawls", "base"))
            self.stage("ga_sequence", self.ga_sequence, needs=("crawls", "base"))
            self.stage("generation", self.generation, needs=("crawls", "base"))
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        self.save()
        self.summary()

    # -- stages --------------------------------------------------------------------------------
    def render(self, entry: dict) -> None:
        pixels = self.reference.get("pixel_sha256", {})
        self.state["crawls"] = render_pictures(self.crawls, self.data_dir, pixels, entry)

    def recipe(self):
        """The CPU run's fine-tuning recipe: its manifest (the reference's, else the base model's
        folder when it is on this machine), else the profile's defaults as the asset makes them."""
        from mlu_training.models.base_model import MANIFEST
        from mlu_training.models.sft import SFTConfig
        from mlu_training.models.tiny_llava import TinyLlavaConfig
        from mlu_training.profiles import get_profile

        manifest = self.reference.get("manifest")
        local = Path(self.cpu_base.get("path", "")) / MANIFEST
        if manifest is None and local.is_file():
            manifest = json.loads(local.read_text())
        if manifest is None:
            profile = get_profile(self.args.profile)
            return (TinyLlavaConfig.for_pictures(profile.image_size),
                    SFTConfig(steps=profile.base_model_steps), None)
        return TinyLlavaConfig(**manifest["tiny"]), SFTConfig(**manifest["sft"]), manifest

    def base_model(self, entry: dict) -> None:
        import mlu_training.models.base_model as base_model
        from mlu_training.data.splits import data_digest
        from mlu_training.evaluation import image_loader
        from mlu_training.models.declining import declines_for
        from mlu_training.threads import use_threads

        entry["threads"] = use_threads(1)  # as the asset: the base model runs alone, on every core
        tiny, sft, manifest = self.recipe()
        full_steps = sft.steps
        if self.args.smoke:
            sft = replace(sft, steps=2, batch_size=4)
        elif self.args.max_steps:
            sft = replace(sft, steps=min(sft.steps, self.args.max_steps))
        capped = sft.steps < full_steps
        entry.update(steps=sft.steps, recipe_steps=full_steps, capped=capped, batch_size=sft.batch_size,
                     image_size=tiny.image_size, recipe_from="CPU manifest" if manifest else "profile defaults")
        pool = declines_for(self.qa, self.splits, sft.seed)
        seen = {"batch_seconds": [], "cells": [], "tokens": [], "answer_tokens": []}  # per batch
        marks: list[float] = []

        def progress(step: int, loss: float) -> None:
            marks.append(time.perf_counter())
            if step % 100 == 0 or step == sft.steps - 1:
                print(f"  step {step + 1}/{sft.steps}: loss {loss:.4f}", flush=True)
            self.check_deadline(f"fine-tuning (step {step + 1}/{sft.steps})")

        original = base_model.train_sft
        base_model.train_sft = observed_training(original, seen, entry)
        try:
            crawls = self.state["crawls"]
            base = base_model.build_base_model(self.splits, image_loader(crawls), data_digest(self.splits, crawls),
                                               self.work / "models", tiny, sft, progress, declines=pool)
        finally:
            base_model.train_sft = original
            self.training_figures(entry, seen, marks)
        self.state["base"], self.state["pool"] = base, pool
        entry.update(num_parameters=base.num_parameters, final_loss=base.final_loss, key_matches_cpu=(
            manifest is not None and base.key == manifest["key"]),
            losses_every_10_percent=[round(base.train_losses[i], 5) for i in
                                     range(0, len(base.train_losses), max(1, len(base.train_losses) // 10))])
        if manifest is not None and not capped and not self.args.smoke:
            cpu = manifest["train_losses"]
            cpu_final = sum(cpu[-10:]) / len(cpu[-10:])
            entry.update(cpu_final_loss=cpu_final, final_loss_over_cpu=base.final_loss / cpu_final)
        seconds_per_step = self.reference.get("readme_cpu", {}).get("base_model_seconds_per_step")
        if seconds_per_step and entry.get("seconds_per_step"):
            entry["speed_up_over_readme_cpu"] = seconds_per_step / entry["seconds_per_step"]

    def training_figures(self, entry: dict, seen: dict, marks: list[float]) -> None:
        """s/step, tokens/s and MFU from what the observed fine-tuning counted (so far, if it
        stopped). Rates leave the first step out (CUDA starting, kernels chosen): from the end of
        the first step to the end of the last, batch building and the state saved every 100 steps
        included, as the fine-tuning runs them."""
        import statistics

        if not marks:
            return
        steps = [b - a for a, b in zip([seen["started"], *marks], marks)]
        later = max(marks[-1] - marks[0], 1e-9) if len(marks) > 1 else steps[0]
        rest = slice(1, None) if len(marks) > 1 else slice(None)
        cells, tokens, answers = (sum(seen[k][rest]) for k in ("cells", "tokens", "answer_tokens"))
        cells_per_second = cells / later
        entry.update(steps_done=len(marks), train_seconds=round(marks[-1] - seen["started"], 2),
                     first_step_seconds=round(steps[0], 3), seconds_per_step=statistics.median(steps[1:] or steps),
                     mean_seconds_per_step=later / max(1, len(marks) - 1),
                     batch_building_share=sum(seen["batch_seconds"][rest]) / later,
                     token_cells_per_second=cells_per_second, tokens_per_second=tokens / later,
                     answer_tokens_per_second=answers / later, real_token_share=tokens / max(1, cells))
        flops = 6 * seen["num_parameters"] * cells_per_second
        entry["mfu"] = {"achieved_tflops": flops / 1e12, "of_bf16_dense_peak": flops / PEAK_BF16,
                        "of_fp32_peak": flops / PEAK_FP32,
                        "assumes": "6 x all parameters x token cells (packed rows, padding included) per second of "
                                   "the training loop after its first step (batch building included); attention's "
                                   "quadratic term and the vision tower's own tokens left out; peaks of one H200: "
                                   "989 TFLOP/s bf16 dense, 67 TFLOP/s fp32 (no tensor cores, TF32 off)"}

    def knowledge_filter(self, entry: dict) -> None:
        """As the knowledge_filter asset (LocalJudge over the QA table, threshold 2, batch 32, 96 new
        tokens) and the base_model asset's calibration, on the model loaded as they load it."""
        import torch

        from mlu_training.evaluation import image_loader
        from mlu_training.judge import LocalJudge
        from mlu_training.models.declining import calibration
        from mlu_training.models.knowledge import filter_known
        from mlu_training.models.vlm import VisionLanguageModel
        from mlu_training.threads import use_threads

        entry["threads"] = use_threads(1)
        load_image, judge = image_loader(self.state["crawls"]), LocalJudge.from_qa(self.qa)
        path = self.state["base"].path
        vlm = VisionLanguageModel.load(path)
        entry["dtype"] = dtype_of(vlm.model)
        t = time.perf_counter()
        known = filter_known(vlm, self.eval_items, load_image, judge, 2, 32, 96)
        entry["filter_seconds"] = round(time.perf_counter() - t, 2)
        self.state["kept"] = known.kept
        entry.update(items=len(known.table), kept=len(known.kept), cpu_kept=len(self.cpu_kept),
                     cpu_items=self.reference.get("eval_items", int((self.splits["split"] == "eval").sum())),
                     missing_judgements=int(known.table["base_score"].isna().sum()),
                     kept_per_task={f"{r.task}-{r.role}": int(r.kept) for r in known.per_task.itertuples()})
        self.check_deadline("the knowledge filter")
        unseen = self.state["pool"].unseen
        unseen = unseen[unseen["variant"] == 0]
        if self.args.smoke:
            unseen = unseen.head(4)
        t = time.perf_counter()
        entry["calibration"] = calibration(vlm, self.eval_items, unseen, load_image)
        entry["calibration_seconds"] = round(time.perf_counter() - t, 2)
        entry["cpu_calibration"] = self.cpu_base.get("calibration", {})
        if entry["dtype"] != "float32":  # the same weights served in float32: what the serving dtype changes
            self.check_deadline("the float32 check")
            items = self.eval_items.head(self.args.fp32_items)
            t = time.perf_counter()
            fp32 = filter_known(VisionLanguageModel.load(path, dtype=torch.float32), items, load_image, judge,
                                2, 32, 96).table["kept"].to_numpy()
            served = known.table.set_index("qa_id").loc[items["qa_id"], "kept"].to_numpy()
            entry["fp32_check"] = {"items": len(items), "kept_served": int(served.sum()), "kept_fp32": int(fp32.sum()),
                                   "same_decision": int((served == fp32).sum()),
                                   "seconds": round(time.perf_counter() - t, 2)}

    def ga_sequence(self, entry: dict) -> None:
        """One GA sequence as the unlearning_sequence asset runs it (UnlearningConfig's defaults,
        the LocalJudge), on the model fine-tuned here and the items its filter kept."""
        import mlu_training.adapters as adapters
        from mlu_training.adapters import AdapterTraining
        from mlu_training.evaluation import image_loader
        from mlu_training.judge import LocalJudge
        from mlu_training.lifelong import UnlearningConfig, run_sequence
        from mlu_training.threads import use_threads

        entry["threads"] = use_threads(2)  # as the asset: the baselines run two side by side
        kept = self.state.get("kept")
        entry["kept_from"] = "this run's knowledge filter"
        if kept is None or (self.args.smoke and kept.empty):  # a smoke run's two steps teach nothing to keep
            entry["kept_from"] = "the CPU run's (" + ("the filter failed)" if kept is None else "this run's kept none)")
            kept = self.cpu_kept[self.cpu_kept["qa_id"].isin(self.eval_items["qa_id"])]
        config = UnlearningConfig(method="ga")
        if self.args.smoke:
            order = "".join(sorted(set(kept["task"]) & set(self.train_items["task"])))[:2]
            config = replace(config, order=order, training=AdapterTraining(steps=1, batch_size=2))
        entry.update(order=config.order, eval_items=len(kept), adapter_steps=config.training.steps,
                     batch_size=config.training.batch_size)
        marks: dict[tuple[int, str], float] = {}
        merges: dict[str, dict] = {}  # task -> how its adapter's update survived the merge

        def on_step(index: int, task: str, phase: str) -> None:
            marks[(index, phase)] = time.perf_counter()
            if phase == "done":
                print(f"  step {index + 1}/{len(config.order)} (task {task}) done", flush=True)
            self.check_deadline(f"the GA sequence (step {index + 1}, {phase})")

        original = adapters.train_adapter
        adapters.train_adapter = observed_adapter(original, merges)
        t = time.perf_counter()
        try:
            result = run_sequence(self.state["base"].path, self.train_items, kept, image_loader(self.state["crawls"]),
                                  LocalJudge.from_qa(self.qa), config, self.work / "sequences" / "ga", on_step)
        finally:
            adapters.train_adapter = original
        entry["sequence_seconds"] = round(time.perf_counter() - t, 2)  # the rest: the metrics' bootstrap intervals
        steps = []
        for i, task in enumerate(config.order):
            losses = [round(x, 4) for x in result.losses.get(task, [])]
            step = {"task": task, "losses": losses[:: max(1, config.training.steps // 5)]}
            if (i, "train") in marks and (i, "evaluate") in marks:
                step["train_seconds"] = round(marks[(i, "evaluate")] - marks[(i, "train")], 2)
            if (i, "evaluate") in marks and (i, "done") in marks:
                step["evaluate_seconds"] = round(marks[(i, "done")] - marks[(i, "evaluate")], 2)
            steps.append({**step, **({"merge": merges[task]} if task in merges else {})})
        entry["steps"] = steps
        metrics = result.metrics()
        kinds = ("forget_quality", "utility", "forget_correctness")
        first = config.order[0]
        entry["task_" + first] = {k: [metrics.get(f"{k}/{first}-U{y}") for y in config.order] for k in kinds}
        cpu = self.reference.get("ga")
        if cpu and cpu.get("lr") != config.as_dict()["training"]["lr"]:
            entry["cpu_comparison"] = f"none: the CPU run's GA ran at lr {cpu.get('lr', 'unrecorded')}"
        elif cpu and cpu["order"] == config.order:
            entry["cpu_task_" + first] = {k: [cpu["metrics"].get(f"{k}/{first}-U{y}") for y in config.order]
                                          for k in kinds}
            cells = [(name, v, cpu["metrics"][name]) for name, v in metrics.items()
                     if name.split("/")[0] in kinds and name.count("/") == 1 and name in cpu["metrics"]]
            entry["mean_abs_gap_to_cpu"] = {k: _mean([abs(a - b) for name, a, b in cells if name.startswith(k + "/")])
                                            for k in kinds}
        seconds = self.reference.get("readme_cpu", {}).get("ga_sequence_seconds")
        if seconds:
            entry["readme_cpu_seconds"] = seconds

    def generation(self, entry: dict) -> None:
        """Batched greedy generation (batch 32, the sequences' 64 new tokens) on the evaluation items,
        the model loaded as every stage loads it; the pictures are read before the clock starts."""
        from mlu_training.evaluation import image_loader
        from mlu_training.models.vlm import VisionLanguageModel
        from mlu_training.threads import use_threads

        entry["threads"] = use_threads(1)
        batch, new = (4, 8) if self.args.smoke else (32, 64)
        items = self.eval_items.head(8 if self.args.smoke else self.args.gen_items)
        load = image_loader(self.state["crawls"])
        images, questions = [load(p) for p in items["image"]], items["question"].tolist()
        vlm = VisionLanguageModel.load(self.state["base"].path)
        vlm.generate(images[:batch], questions[:batch], batch_size=batch, max_new_tokens=new)  # warm-up
        t = time.perf_counter()
        answers = vlm.generate(images, questions, batch_size=batch, max_new_tokens=new)
        seconds = time.perf_counter() - t
        tokens = sum(min(new, len(vlm.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1) for a in answers)
        entry.update(items=len(items), batch_size=batch, max_new_tokens=new, dtype=dtype_of(vlm.model),
                     generated_tokens=tokens, generate_seconds=seconds, tokens_per_second=tokens / seconds,
                     items_per_second=len(items) / seconds)

    # -- report --------------------------------------------------------------------------------
    def summary(self) -> None:
        s, env = self.result["stages"], self.result.get("environment", {})
        print(f"\n== gpu bench, profile {self.result['profile']}{' (smoke)' if self.args.smoke else ''}: "
              f"{env.get('device_name', env.get('device'))}, torch {env.get('torch')}, "
              f"transformers {env.get('transformers')}, {self.result['total_seconds']:.1f} s in all")
        for name in STAGES:
            e = s.get(name)
            if e is None:
                print(f"  {name:17s} not reached")
                continue
            memory = f", peak {e['peak_gpu_memory_mb']:.0f} MB" if "peak_gpu_memory_mb" in e else ""
            print(f"  {name:17s} {'ok    ' if e['ok'] else 'FAILED'} {e.get('seconds', 0):7.1f} s{memory}")
        r = s.get("render", {})
        if "pictures" in r:
            print(f"  pictures: {r['pictures']} ({r['rendered']} rendered, {r['reused']} on disk, "
                  f"{r['png_differs_pixels_same']} with other PNG bytes but the same pixels), {r['workers']} processes")
        b = s.get("base_model", {})
        if "steps_done" in b:
            cap = f" (capped from {b['recipe_steps']})" if b.get("capped") else ""
            print(f"  fine-tuning: {b['steps_done']}/{b['steps']} steps{cap} of batch {b['batch_size']} on "
                  f"{b.get('trained_on')} in {b.get('weights_dtype')} (autocast: {b.get('autocast')}): "
                  f"{b['seconds_per_step'] * 1000:.1f} ms/step (first {b['first_step_seconds']:.2f} s), "
                  f"{b['token_cells_per_second']:,.0f} token cells/s ({100 * b['real_token_share']:.0f} % real), "
                  f"batch building {100 * b['batch_building_share']:.0f} % of the loop")
            if "speed_up_over_readme_cpu" in b:
                print(f"    {b['speed_up_over_readme_cpu']:.1f}x the README's CPU step (2 cores)")
            m = b["mfu"]
            print(f"    MFU {100 * m['of_bf16_dense_peak']:.3f} % of bf16 dense peak, "
                  f"{100 * m['of_fp32_peak']:.2f} % of fp32 peak ({m['achieved_tflops']:.3f} TFLOP/s)")
        if "final_loss" in b:
            cpu = f", CPU {b['cpu_final_loss']:.5f} (x{b['final_loss_over_cpu']:.2f})" if "cpu_final_loss" in b else \
                " (no CPU comparison: capped or smoke)"
            print(f"    final loss (mean of the last 10) {b['final_loss']:.5f}{cpu}; "
                  f"same recipe key as CPU: {b['key_matches_cpu']}")
        k = s.get("knowledge_filter", {})
        if "kept" in k:
            print(f"  knowledge filter ({k['dtype']}): kept {k['kept']}/{k['items']} "
                  f"(CPU {k['cpu_kept']}/{k['cpu_items']}) in {k['filter_seconds']:.1f} s")
        if "calibration" in k:
            print(f"    calibration: {k['calibration']} (CPU {k['cpu_calibration']}) "
                  f"in {k['calibration_seconds']:.1f} s")
        if "fp32_check" in k:
            f = k["fp32_check"]
            print(f"    same weights in float32 on {f['items']} items: kept {f['kept_fp32']} vs {f['kept_served']} "
                  f"served, same decision on {f['same_decision']}")
        g = s.get("ga_sequence", {})
        task = next((key for key in g if key.startswith("task_")), None)
        if task:
            cpu_seconds = f" (README CPU: {g['readme_cpu_seconds']} s)" if "readme_cpu_seconds" in g else ""
            parts = [f"{st['task']} train {st['train_seconds']:.1f} s + evaluate {st.get('evaluate_seconds', 0):.1f} s"
                     if "train_seconds" in st else f"{st['task']} nothing to unlearn" for st in g["steps"]]
            print(f"  GA {g['order']} ({g['eval_items']} kept items) in {g['sequence_seconds']:.1f} s{cpu_seconds}: "
                  + ", ".join(parts))
            for kind, values in g[task].items():
                cpu = g.get("cpu_" + task, {}).get(kind)
                print(f"    {task[5:]} {kind:18s} " + " → ".join(_fmt(v) for v in values)
                      + (f"   (CPU " + " → ".join(_fmt(v) for v in cpu) + ")" if cpu else ""))
            merge = [st["merge"] for st in g["steps"] if "lost_share" in st.get("merge", {})]
            if merge:
                print(f"    merging LoRA ({merge[0]['lora_dtype']}) into {merge[0]['backbone_dtype']} weights: "
                      + ", ".join(f"{100 * m['lost_share']:.1f} % of the update lost" for m in merge))
        gen = s.get("generation", {})
        if "tokens_per_second" in gen:
            print(f"  generation ({gen['dtype']}): {gen['items']} items, batch {gen['batch_size']}: "
                  f"{gen['tokens_per_second']:,.0f} tokens/s, {gen['items_per_second']:.1f} items/s")
        for name, e in s.items():
            if not e["ok"]:
                print(f"  {name} failed: {e.get('error', '').strip().splitlines()[-1] if e.get('error') else '?'}")
        sys.stdout.flush()


# -- observation (nothing here changes what the pipeline computes) -------------------------------
def observed_training(train_sft, seen: dict, entry: dict):
    """models.sft.train_sft, with where and in which dtype it trains recorded, and its batches
    timed and counted."""
    def observed(vlm, *args, **kwargs):
        import torch

        entry.update(trained_on=str(vlm.device), weights_dtype=dtype_of(vlm.model),
                     autocast=torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"))
        seen["num_parameters"], seen["batch_seconds"] = vlm.num_parameters(), []
        pad = vlm.tokenizer.pad_token_id
        for name in ("training_batch", "packed_training_batch"):
            make = getattr(vlm, name)

            def timed(*a, _make=make, **k):
                t = time.perf_counter()
                batch = _make(*a, **k)
                seen["batch_seconds"].append(time.perf_counter() - t)
                ids = batch["input_ids"]
                seen["cells"].append(ids.numel())
                seen["tokens"].append(int((ids != pad).sum()))
                seen["answer_tokens"].append(int((batch["labels"] != -100).sum()))
                return batch

            setattr(vlm, name, timed)
        seen["started"] = time.perf_counter()
        return train_sft(vlm, *args, **kwargs)

    return observed


def observed_adapter(train_adapter, merges: dict[str, dict]):
    """adapters.train_adapter, with how much of each adapter's update survives being merged into
    the backbone's weights measured before run_sequence merges it (in bfloat16 weights, a change
    smaller than about 1/256 of a weight rounds away)."""
    def observed(vlm, method, train_items, task, *args, **kwargs):
        model, losses = train_adapter(vlm, method, train_items, task, *args, **kwargs)
        try:
            merges[task] = merge_rounding(model)
        except Exception:  # noqa: BLE001 - a measurement beside the sequence never stops it
            merges[task] = {"error": traceback.format_exc(limit=3)}
        return model, losses

    return observed


def merge_rounding(peft_model) -> dict:
    """Over every LoRA layer: |update| / |weight|, and the share of the update the merge rounds
    away (|rounded(W + ΔW) - (W + ΔW)| / |ΔW|, in the backbone's dtype, as peft merges in place)."""
    import torch
    from peft.tuners.lora import LoraLayer

    delta2 = weight2 = lost2 = 0.0
    lora_dtype = backbone_dtype = None
    with torch.no_grad():
        for module in peft_model.modules():
            if not isinstance(module, LoraLayer) or "default" not in getattr(module, "lora_A", {}):
                continue
            weight = module.get_base_layer().weight
            delta = module.get_delta_weight("default").float()
            exact = weight.float() + delta
            rounded = exact.to(weight.dtype).float()
            delta2 += float(delta.pow(2).sum())
            weight2 += float(weight.float().pow(2).sum())
            lost2 += float((rounded - exact).pow(2).sum())
            lora_dtype, backbone_dtype = dtype_of(module.lora_A["default"]), str(weight.dtype).removeprefix("torch.")
    return {"lora_dtype": lora_dtype, "backbone_dtype": backbone_dtype,
            "update_over_weights": (delta2 / weight2) ** 0.5 if weight2 else None,
            "lost_share": (lost2 / delta2) ** 0.5 if delta2 else 0.0}


def dtype_of(module) -> str:
    return str(next(module.parameters()).dtype).removeprefix("torch.")


def environment(torch, device: str) -> dict:
    import peft
    import transformers

    env = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "python": platform.python_version(), "cpus": len(os.sched_getaffinity(0)),
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    if device == "cuda":
        env.update(device_name=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return env


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="mini", help="names the inputs (.gpu/<profile>) and the defaults (mini)")
    ap.add_argument("--data-dir", type=Path, default=None, help="tables/ of a finished run (default .gpu/<profile>)")
    ap.add_argument("--reference", default=None, help=f"the CPU numbers (default <data-dir>/{REFERENCE})")
    ap.add_argument("--out", default=None, help="the results as JSON (written after every stage)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when torch sees one")
    ap.add_argument("--max-steps", type=int, default=None, help="cap the fine-tuning steps (no loss comparison then)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds: a stage running past it stops (its measurements kept), the later ones are skipped")
    ap.add_argument("--gen-items", type=int, default=1024, help="evaluation items the generation stage answers")
    ap.add_argument("--fp32-items", type=int, default=1024, help="items the float32 check of the filter asks")
    ap.add_argument("--work-dir", default=None, help="where the models and sequences go (a temporary folder, removed)")
    ap.add_argument("--smoke", action="store_true",
                    help="every stage on the CPU, a few steps and items: measures nothing")
    ap.add_argument("--prepare", type=Path, default=None, metavar="RUN_DATA_DIR",
                    help="write the inputs (tables, CPU reference) from this finished run's data folder, then exit")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args.prepare, Path(args.data_dir or ROOT / ".gpu" / args.profile), args.profile)
        return
    if args.smoke or args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch loads: every model then stays on the CPU
    GpuBench(args).run()


if __name__ == "__main__":
    main()
