"""`mlu run`: the main job on the embedded defaults, recorded in DAGSTER_HOME like a UI launch.

It launches the jobs of the definitions (definitions.STAGES), one partition per run: the
benchmark, the default base model and its knowledge filter, one run per unlearning method and
one per LUMoE expert (these are independent: MLU_PARALLEL_RUNS of them at once, each in a worker
process with its share of the cores), LUMoE's sequence, then the report. What is up to date is
reused (the base model, finished sequences, registered experts).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from mlu_training.benchmark import DEFAULT_ORDER


# What the terminal shows of the leaderboard (the report has every summary of both scores).
CLI_COLUMNS = ["method", "base model", "judge", "order", "seeds", "forget quality", "utility", "drift FQ", "drift utility",
               "worst drop utility", "router recall"]


def _print_leaderboard(board: list[dict], html: str, provenance: dict | None = None) -> None:
    import pandas as pd
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mlu_training.report import for_display, judges_note

    frame = pd.DataFrame(board)
    columns = [c for c in CLI_COLUMNS if c in frame.columns]
    if "note" in frame.columns and frame["note"].astype(bool).any():
        columns.append("note")  # why some numbers are absent: nothing known, nothing to unlearn
    for same in ("base model", "judge"):  # one base model, one judge: the column says nothing (the heading does)
        if same in columns and (frame.empty or frame[same].nunique() == 1):
            columns.remove(same)
    shown = for_display(frame, columns) if not frame.empty else frame
    table = Table(title="mlu leaderboard (after the last request; [95 % interval]; drift: the stability objective, "
                        "0 = stable)")
    for col in columns:
        table.add_column(col, justify="left" if col in ("method", "base model", "judge", "order") else "right")
    for row in shown.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))  # "ga [projector]" is text, not rich markup
    Console(width=200).print(table)
    judges = ", ".join(sorted(set(frame["judge"]))) if "judge" in frame.columns else "–"
    print(" · ".join(f"{k}: {v}" for k, v in {**(provenance or {}), "judge": judges}.items() if k != "judges"))
    if "judge" in frame.columns and judges_note(frame):
        print(f"mlu: warning: {judges_note(frame)}")
    print(f"report: {html}")


# The console shows warnings and errors of a run; every event (DEBUG included) is still in the
# run's log in DAGSTER_HOME, which the Dagster UI shows.
CONSOLE_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def quiet() -> None:
    """What `mlu run` prints is its own progress and the leaderboard: Dagster's per-event lines stay
    in the run's log, and known noise (Dagster's beta/preview notices, libraries' FutureWarnings such
    as transformers' about gradient checkpointing, their INFO chatter) is not shown."""
    import logging
    import os
    import warnings

    import dagster as dg

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for category in (dg.BetaWarning, dg.PreviewWarning, getattr(dg, "SupersessionWarning", None)):
        if category is not None:
            warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("alembic", "mlflow", "transformers", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def execute_stage(job, instance, partition, run_config: dict):
    """One stage of the main job, executed here and recorded in the instance like a launch from the
    UI (tagged with this process, so a kill leaves no run STARTED for good: see runs.py)."""
    from .runs import process_tags

    return job.execute_in_process(run_config={**run_config, **CONSOLE_LOGS}, instance=instance,
                                  partition_key=partition, raise_on_error=False, tags=process_tags())


@dataclass(frozen=True)
class Stage:
    """One run of the main job. Consecutive stages marked `side_by_side` are independent (the
    baselines, the experts) and run MLU_PARALLEL_RUNS at a time, each in a process of its own;
    stages of one partition among them (a method's unimodal runs, then its default run) keep
    their order. Any other stage waits for everything before it and runs alone, here."""

    what: str
    job: str
    partition: object = None  # a partition key (str or dagster.MultiPartitionKey) or None
    run_config: dict = field(default_factory=dict)
    side_by_side: bool = False

    @property
    def lane(self) -> tuple[str, str]:
        return self.job, str(self.partition)


def main_job_plan(model: str, methods: list[str], seeds: list[int], unimodal: list[str] = (),
                  orders: list[str] = (DEFAULT_ORDER,), base_seeds: list[int] = ()) -> list[Stage]:
    """Every run of the main job, in order: every baseline and LUMoE (its experts, then its
    sequence) once per seed and task order, then the report, which pools the seeds (each order is
    a row of its own). A seed is the `training.seed` of the Launchpad config: finished seeds are
    reused. The methods in `unimodal` also run confined to the projector and to the vision tower
    (first seed, first order), before their default run, so the partition's latest value stays the
    default one. The experts do not depend on the order: one set per seed, all finished before
    LUMoE's sequences read the registry, and before the next seed's experts replace them.
    `base_seeds`: the base model taught again with each (`base_model`'s `seed`), everything above
    run on each; the first one listed goes last, so that it stays the partition's base model (and
    the unimodal ablation runs on it only). None given: the Launchpad's default seed, once."""
    plan = [Stage("the benchmark group", "benchmark_job")]
    for base_seed in [*base_seeds[1:], *base_seeds[:1]] or [None]:
        on_base = f" (base seed {base_seed})" if len(base_seeds) > 1 else ""
        plan += [Stage(f"the base model {model!r}{on_base}", "base_model_job", model,
                       {"ops": {"base_model": {"config": {"seed": base_seed}}}} if base_seed is not None else {})]
        plan += _sequences_plan(model, methods, seeds, unimodal if base_seed == (base_seeds or [None])[0] else [],
                                orders, on_base)
    return plan + [Stage("the report", "report_job")]


def _seeded(asset: str, seed: int, order: str | None = None, **training) -> dict:
    """The run config of `asset` with its training seed (and task order, training settings)."""
    config = {"training": {"seed": seed, **training}, **({"order": order} if order else {})}
    return {"ops": {asset: {"config": config}}}


def _sequences_plan(model: str, methods: list[str], seeds: list[int], unimodal: list[str], orders: list[str],
                    on_base: str) -> list[Stage]:
    """main_job_plan's runs on one base model (`on_base` names its seed in their names)."""
    import dagster as dg

    from mlu_training.benchmark import TASKS
    from mlu_training.paper import UNIMODAL

    plan = []
    for seed in seeds:
        tag = (f" (seed {seed})" if len(seeds) > 1 else "") + on_base
        if seed == seeds[0]:
            plan += [Stage(f"unlearning with {m}, {part} only{tag}", "unlearning_job",
                           dg.MultiPartitionKey({"method": m, "model": model}),
                           _seeded("unlearning_sequence", seed, orders[0], targets=part), side_by_side=True)
                     for m in unimodal for part in UNIMODAL]
        for order in orders:
            told = tag + (f" (order {order})" if order != DEFAULT_ORDER else "")
            plan += [Stage(f"unlearning with {m}{told}", "unlearning_job", dg.MultiPartitionKey({"method": m, "model": model}),
                           _seeded("unlearning_sequence", seed, order), side_by_side=True) for m in methods]
        plan += [Stage(f"the expert of task {t}{tag}", "lumoe_expert_job", dg.MultiPartitionKey({"model": model, "request": t}),
                       _seeded("lumoe_experts", seed), side_by_side=True) for t in TASKS]
        # The paper's order is the order the requests arrived in (A-D, then any later request).
        plan += [Stage(f"LUMoE's sequence{tag}", "lumoe_job", model) if order == DEFAULT_ORDER else
                 Stage(f"LUMoE's sequence{tag} (order {order})", "lumoe_job", model,
                       {"ops": {"lumoe_sequence": {"config": {"order": order}}}}) for order in orders]
    return plan


def _batches(plan: list[Stage]) -> list[list[Stage]]:
    """The plan cut where it must wait: runs of side-by-side stages together, others alone."""
    out: list[list[Stage]] = []
    for stage in plan:
        if stage.side_by_side and out and out[-1][0].side_by_side:
            out[-1].append(stage)
        else:
            out.append([stage])
    return out


# -- the worker processes of side-by-side stages -----------------------------------------------
_WORKER: dict = {}
DEFINITIONS = "mlu_assets.definitions:defs"


def _start_worker(definitions: str) -> None:
    """A worker's set-up, once: the same quiet console and definitions as the main process."""
    quiet()
    import importlib

    import dagster as dg

    module, name = definitions.split(":")
    _WORKER.update(defs=getattr(importlib.import_module(module), name), instance=dg.DagsterInstance.get())


def _execute_in_worker(job: str, partition, run_config: dict) -> bool:
    import dagster as dg

    if isinstance(partition, dict):  # a MultiPartitionKey travels as its dimensions
        partition = dg.MultiPartitionKey(partition)
    return execute_stage(_WORKER["defs"].resolve_job_def(job), _WORKER["instance"], partition, run_config).success


def side_by_side(stages: list[Stage], parallel_runs: int, timings: dict[str, float],
                 definitions: str = DEFINITIONS) -> list[Stage]:
    """Run the stages `parallel_runs` at a time in worker processes (a partition's stages in their
    order); returns the stages that failed (none started after a failure)."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import dagster as dg

    dg.DagsterInstance.get()  # its storage made here, once: workers creating it at once race on the schema
    lanes: dict[tuple, deque] = {}
    for stage in stages:
        lanes.setdefault(stage.lane, deque()).append(stage)
    failed: list[Stage] = []
    # spawn: a fresh interpreter per worker (no forked torch or Dagster state), which inherits the
    # environment: OMP_WAIT_POLICY, DAGSTER_HOME and every MLU_* setting.
    with ProcessPoolExecutor(max_workers=min(parallel_runs, len(lanes)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(definitions,)) as pool:
        running: dict = {}

        def submit(lane: deque) -> None:
            stage = lane.popleft()
            print(f"mlu: {stage.what} …", flush=True)
            partition = getattr(stage.partition, "keys_by_dimension", stage.partition)
            running[pool.submit(_execute_in_worker, stage.job, partition, stage.run_config)] = (stage, lane,
                                                                                                time.perf_counter())

        waiting = deque(lanes.values())
        while waiting and len(running) < parallel_runs:
            submit(waiting.popleft())
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                stage, lane, began = running.pop(future)
                error = future.exception()  # the worker itself broke (its run may not exist): say how
                ok = error is None and future.result()
                timings[stage.what] = time.perf_counter() - began
                if not ok:
                    failed.append(stage)
                    why = f": {type(error).__name__}: {error}" if error else "; see the run in the Dagster UI"
                    print(f"mlu: {stage.what} failed{why}", file=sys.stderr, flush=True)
                    continue
                print(f"mlu: {stage.what} done in {timings[stage.what]:.0f} s", flush=True)
                if lane:
                    waiting.appendleft(lane)  # its next stage, before lanes not yet begun
            while not failed and waiting and len(running) < parallel_runs:
                submit(waiting.popleft())
    return failed


def _print_timings(timings: dict[str, float], wall: float) -> None:
    """Seconds per stage (side-by-side stages overlap, so they add up to more than the wall time)."""
    width = max(map(len, timings), default=0)
    print("mlu: seconds per stage")
    for what, seconds in timings.items():
        print(f"  {what:<{width}}  {seconds:6.0f}")
    print(f"  {'in all (wall clock)':<{width}}  {wall:6.0f}")


def run(methods: list[str], seeds: list[int] = (0,), unimodal: list[str] = (), orders: list[str] = (DEFAULT_ORDER,),
        base_seeds: list[int] = ()) -> int:
    import os

    quiet()  # before the definitions load: their import may warn too

    import dagster as dg

    from mlu_training.paths import PROJECT_ROOT

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))  # as the Makefile does
    from .definitions import defs
    from .partitions import missing_default_partitions
    from .settings import setting

    from mlu_training.models.sources import default_key

    from .runs import fail_orphaned_runs

    instance = dg.DagsterInstance.get()
    for orphan in fail_orphaned_runs(instance):  # a killed `mlu run` before this one: redone below
        print(f"mlu: marked run {orphan.run_id[:8]} ({orphan.job_name}) failed: its process is gone", flush=True)
    model = default_key(setting("MLU_BASE_MODEL"))
    for request in missing_default_partitions(instance, model):
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    parallel_runs = max(1, int(setting("MLU_PARALLEL_RUNS")))

    started = time.perf_counter()
    timings: dict[str, float] = {}
    result = None
    for batch in _batches(main_job_plan(model, methods, list(seeds), list(unimodal), list(orders), list(base_seeds))):
        if batch[0].side_by_side and parallel_runs > 1 and len(batch) > 1:
            if side_by_side(batch, parallel_runs, timings):
                return 1
            continue
        for stage in batch:
            t = time.perf_counter()
            print(f"mlu: {stage.what} …", flush=True)
            result = execute_stage(defs.resolve_job_def(stage.job), instance, stage.partition, stage.run_config)
            if not result.success:
                print(f"mlu: {stage.what} failed; see the run in the Dagster UI", file=sys.stderr)
                return 1
            timings[stage.what] = time.perf_counter() - t
            print(f"mlu: {stage.what} done in {timings[stage.what]:.0f} s", flush=True)
    report = result.output_for_node("report")
    _print_timings(timings, time.perf_counter() - started)
    _print_leaderboard(report.leaderboard, report.html, report.provenance)
    print(f"mlu: done in {time.perf_counter() - started:.0f} s. Look at it:\n"
          "  make ui   (Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000)")
    return 0


def _in_dependency_order(jobs, graph) -> list:
    """The jobs so that none runs before a job whose assets it reads (the attacks read the gold
    model: the per-model job first); otherwise in their given order."""
    members = {job.name: set(job.selection.resolve(graph)) for job in jobs}
    reads = {job.name: {parent for key in members[job.name] for parent in graph.get(key).parent_keys} for job in jobs}
    ordered, left = [], list(jobs)
    while left:
        ready = [j for j in left if not any(reads[j.name] & members[o.name] for o in left if o is not j)]
        ordered.append((ready or left)[0])  # a cycle between jobs (none today): keep the given order
        left.remove(ordered[-1])
    return ordered


def robustness_plan(defs, jobs, instance, model: str) -> list[tuple[str, str, object]]:
    """(what, job name, partition key) of each run of `mlu robustness`: every job of the group,
    for each of its partitions on base model `model` whose partitioned inputs are materialized
    (a method that `mlu run --methods` left out is skipped, not failed)."""
    import dagster as dg

    graph = defs.resolve_asset_graph()
    plan = []
    for job in _in_dependency_order(jobs, graph):
        partitions = job.partitions_def
        members = set(job.selection.resolve(graph))
        if partitions is None:
            plan.append((f"the robustness assets ({', '.join(sorted(k.to_user_string() for k in members))})", job.name, None))
            continue
        keys = partitions.get_partition_keys(dynamic_partitions_store=instance)
        keys = [k for k in keys if (k.keys_by_dimension.get("model") if isinstance(k, dg.MultiPartitionKey) else k) == model]
        inputs = {parent for key in members for parent in graph.get(key).parent_keys
                  if parent not in members and graph.get(parent).partitions_def == partitions}
        for parent in inputs:
            done = instance.get_materialized_partitions(parent)
            keys = [k for k in keys if str(k) in done]
        names = ", ".join(sorted(k.to_user_string() for k in members))
        plan += [(f"{names} for {k}", job.name, k) for k in keys]
    return plan


def robustness() -> int:
    """Every asset of the group `robustness` for the default base model, after a finished `mlu run`,
    then the report (its Robustness section reads their MLflow runs)."""
    import os

    quiet()

    import dagster as dg

    from mlu_training.paths import PROJECT_ROOT

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    from mlu_training.models.sources import default_key

    from .definitions import ROBUSTNESS_JOBS, defs
    from .runs import fail_orphaned_runs
    from .settings import setting

    instance = dg.DagsterInstance.get()
    for orphan in fail_orphaned_runs(instance):
        print(f"mlu: marked run {orphan.run_id[:8]} ({orphan.job_name}) failed: its process is gone", flush=True)
    plan = robustness_plan(defs, ROBUSTNESS_JOBS, instance, default_key(setting("MLU_BASE_MODEL")))
    if not plan:
        print("mlu: nothing to stress: run `mlu run` first (no finished sequence for the base model)", file=sys.stderr)
        return 1
    started, failed = time.perf_counter(), []
    for what, job, partition in plan:
        t = time.perf_counter()
        print(f"mlu: {what} …", flush=True)
        result = execute_stage(defs.resolve_job_def(job), instance, partition, {})
        if not result.success:
            failed.append(what)
            print(f"mlu: {what} failed; see the run in the Dagster UI", file=sys.stderr)
            continue
        print(f"mlu: {what} done in {time.perf_counter() - t:.0f} s", flush=True)
    result = execute_stage(defs.resolve_job_def("report_job"), instance, None, {})  # the Robustness section
    if not result.success:
        failed.append("the report")
    else:
        report = result.output_for_node("report")
        print(f"mlu: the report with its Robustness section: {report.html}")
    print(f"mlu: robustness done in {time.perf_counter() - started:.0f} s" + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def request(request_id: str, entities: list[str]) -> int:
    """Check the request now (its id, and its names against the entity catalog once there is one),
    so a typo is caught at the prompt; a refused request changes nothing on disk."""
    from pathlib import Path

    import pandas as pd

    from mlu_training.lumoe.requests import (RequestRejected, check_request_id, parse_request, rejection_path,
                                             served_entities, write_request)

    from .settings import setting

    folder = Path(setting("MLU_REQUESTS_DIR"))
    tables = Path(setting("MLU_DATA_DIR")) / "tables"
    try:
        check_request_id(request_id)
        if (tables / "entity_catalog.parquet").is_file():
            splits = tables / "benchmark_splits.parquet"
            served = served_entities(setting("MLU_DATA_DIR"), pd.read_parquet(splits) if splits.is_file() else None)
            parse_request(request_id, {"entities": entities}, pd.read_parquet(tables / "entity_catalog.parquet"), served)
    except RequestRejected as why:
        print(f"mlu: rejected, nothing filed: {why}", file=sys.stderr)
        return 2
    path = write_request(folder, request_id, entities)
    rejection_path(folder, request_id).unlink(missing_ok=True)  # an older refusal of this id no longer holds
    print(f"mlu: request filed as {path}; with `make ui` running, the sensor trains its expert and re-evaluates")
    return 0


def _seed_list(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"{option} {text!r}: whole numbers, comma-separated")
    if len(set(seeds)) != len(seeds):
        parser.error(f"{option} {text!r}: each seed once")
    return seeds


def main(argv: list[str] | None = None) -> int:
    from mlu_training.methods import METHODS

    parser = argparse.ArgumentParser(prog="mlu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="the main job")
    p_run.add_argument("--methods", default=",".join(METHODS),
                       help=f"baselines to run, comma-separated, of {', '.join(METHODS)} ('' for none)")
    p_run.add_argument("--seeds", default="0", help="training seeds, comma-separated (e.g. 0,1,2): every method runs "
                       "once per seed, the report pools them; finished seeds are reused")
    p_run.add_argument("--base-seeds", default="", help="seeds of the base model, comma-separated (e.g. 0,1): it is "
                       "taught again with each and everything runs on each; the report pools them ('' for the "
                       "Launchpad's default, once)")
    p_run.add_argument("--orders", default=DEFAULT_ORDER, help="task orders, comma-separated (e.g. ABCD,CABD): "
                       "every method runs each order; the report shows each as a row of its own")
    p_run.add_argument("--unimodal", default="ga,npo", help="methods also run confined to the projector and to the "
                       "vision tower (the paper's unimodal ablation), comma-separated ('' for none)")
    p_req = sub.add_parser("request", help="file an unlearning request (the Dagster sensor picks it up)")
    p_req.add_argument("id", help="the request's id (letters, digits, '.', '_', '-')")
    p_req.add_argument("entities", nargs="+", help="names of the entities to forget")
    sub.add_parser("robustness", help="audit and attack the results of a finished `mlu run` (the robustness group)")
    args = parser.parse_args(argv)
    if args.command == "robustness":
        return robustness()
    if args.command == "request":
        return request(args.id, args.entities)
    if args.command == "run":
        methods = [m for m in args.methods.split(",") if m]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            parser.error(f"unknown method(s) {', '.join(unknown)}")
        seeds, base_seeds = _seed_list(parser, "--seeds", args.seeds), _seed_list(parser, "--base-seeds", args.base_seeds)
        unimodal = [m for m in args.unimodal.split(",") if m]
        if set(unimodal) - set(METHODS):
            parser.error(f"--unimodal: unknown method(s) {', '.join(sorted(set(unimodal) - set(METHODS)))}")
        orders = [o.strip().upper() for o in args.orders.split(",") if o.strip()] or [DEFAULT_ORDER]
        bad = [o for o in orders if sorted(o) != sorted(DEFAULT_ORDER)]
        if bad:
            parser.error(f"--orders: {', '.join(bad)} is not an order of the tasks {DEFAULT_ORDER} (each once)")
        return run(methods, seeds or [0], unimodal, orders, base_seeds)
    return 2


if __name__ == "__main__":
    sys.exit(main())
