"""`mlu run`: the main job on the embedded defaults, recorded in DAGSTER_HOME like a UI launch.

It launches the jobs of the definitions (definitions.STAGES), one partition at a time: the
benchmark, the default base model and its knowledge filter, one run per unlearning method, LUMoE's
experts and sequence, then the report. What is up to date is reused (the base model, finished
sequences, registered experts).
"""

from __future__ import annotations

import argparse
import sys
import time


# What the terminal shows of the leaderboard (the report has every summary of both scores).
CLI_COLUMNS = ["method", "base model", "order", "seeds", "forget quality", "utility", "drift FQ", "drift utility",
               "worst drop utility", "router recall"]


def _print_leaderboard(board: list[dict], html: str) -> None:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from mlu_training.report import for_display

    frame = pd.DataFrame(board)
    columns = [c for c in CLI_COLUMNS if c in frame.columns]
    if frame.empty or frame["base model"].nunique() == 1:
        columns.remove("base model")  # one base model: the column says nothing
    shown = for_display(frame, columns) if not frame.empty else frame
    table = Table(title="mlu leaderboard (after the last request; [95 % interval]; drift: the stability objective, "
                        "0 = stable)")
    for col in columns:
        table.add_column(col, justify="left" if col in ("method", "base model", "order") else "right")
    for row in shown.itertuples(index=False):
        table.add_row(*map(str, row))
    Console(width=200).print(table)
    print(f"report: {html}")


UNIMODAL_PARTS = ("projector", "vision_tower")  # the paper's ablation: unlearning confined to one modality


def main_job_plan(model: str, methods: list[str], seeds: list[int], unimodal: list[str] = ()) -> list[tuple[str, str, object, dict]]:
    """(what, job name, partition key, run config) of each run of the main job, in order: every
    baseline and LUMoE (its experts, then its sequence) once per seed, then the report, which pools
    the seeds. A seed is the `training.seed` of the Launchpad config: finished seeds are reused.
    The methods in `unimodal` also run confined to the projector and to the vision tower (first
    seed), before their default run, so the partition's latest value stays the default one."""
    import dagster as dg

    from mlu_training.benchmark import TASKS

    def seeded(asset: str, seed: int, **training) -> dict:
        return {"ops": {asset: {"config": {"training": {"seed": seed, **training}}}}}

    plan = [("the benchmark group", "benchmark_job", None, {}),
            (f"the base model {model!r}", "base_model_job", model, {})]
    for seed in seeds:
        tag = f" (seed {seed})" if len(seeds) > 1 else ""
        if seed == seeds[0]:
            plan += [(f"unlearning with {m}, {part} only{tag}", "unlearning_job",
                      dg.MultiPartitionKey({"method": m, "model": model}), seeded("unlearning_sequence", seed, targets=part))
                     for m in unimodal for part in UNIMODAL_PARTS]
        plan += [(f"unlearning with {m}{tag}", "unlearning_job", dg.MultiPartitionKey({"method": m, "model": model}),
                  seeded("unlearning_sequence", seed)) for m in methods]
        plan += [(f"the expert of task {t}{tag}", "lumoe_expert_job", dg.MultiPartitionKey({"model": model, "request": t}),
                  seeded("lumoe_experts", seed)) for t in TASKS]
        plan.append((f"LUMoE's sequence{tag}", "lumoe_job", model, {}))
    return plan + [("the report", "report_job", None, {})]


def run(methods: list[str], seeds: list[int] = (0,), unimodal: list[str] = ()) -> int:
    import os

    import dagster as dg

    from mlu_training.paths import PROJECT_ROOT

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))  # as the Makefile does
    from .definitions import defs
    from .partitions import missing_default_partitions
    from .settings import setting

    from mlu_training.models.sources import default_key

    instance = dg.DagsterInstance.get()
    model = default_key(setting("MLU_BASE_MODEL"))
    for request in missing_default_partitions(instance, model):
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))

    started = time.perf_counter()
    result = None
    for what, job, partition, run_config in main_job_plan(model, methods, list(seeds), list(unimodal)):
        t = time.perf_counter()
        print(f"mlu: {what} …", flush=True)
        result = defs.get_job_def(job).execute_in_process(run_config=run_config, instance=instance, partition_key=partition,
                                                          raise_on_error=False)
        if not result.success:
            print(f"mlu: {what} failed; see the run in the Dagster UI", file=sys.stderr)
            return 1
        print(f"mlu: {what} done in {time.perf_counter() - t:.0f} s", flush=True)
    report = result.output_for_node("report")
    _print_leaderboard(report.leaderboard, report.html)
    print(f"mlu: done in {time.perf_counter() - started:.0f} s. Look at it:\n"
          "  make ui   (Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000)")
    return 0


def request(request_id: str, entities: list[str]) -> int:
    """Check the request against the entity catalog now, so a typo is caught at the prompt."""
    from pathlib import Path

    import pandas as pd

    from mlu_training.lumoe.requests import RequestRejected, read_request, write_request

    from .settings import setting

    catalog = Path(setting("MLU_DATA_DIR")) / "tables" / "entity_catalog.parquet"
    path = write_request(Path(setting("MLU_REQUESTS_DIR")), request_id, entities)
    if catalog.is_file():
        try:
            read_request(path, pd.read_parquet(catalog))
        except RequestRejected as why:
            path.unlink()
            print(f"mlu: rejected: {why}", file=sys.stderr)
            return 2
    print(f"mlu: request filed as {path}; with `make ui` running, the sensor trains its expert and re-evaluates")
    return 0


def main(argv: list[str] | None = None) -> int:
    from mlu_training.methods import METHODS

    parser = argparse.ArgumentParser(prog="mlu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="the main job")
    p_run.add_argument("--methods", default=",".join(METHODS),
                       help=f"baselines to run, comma-separated, of {', '.join(METHODS)} ('' for none)")
    p_run.add_argument("--seeds", default="0", help="training seeds, comma-separated (e.g. 0,1,2): every method runs "
                       "once per seed, the report pools them; finished seeds are reused")
    p_run.add_argument("--unimodal", default="ga,npo", help="methods also run confined to the projector and to the "
                       "vision tower (the paper's unimodal ablation), comma-separated ('' for none)")
    p_req = sub.add_parser("request", help="file an unlearning request (the Dagster sensor picks it up)")
    p_req.add_argument("id", help="the request's id (letters, digits, '.', '_', '-')")
    p_req.add_argument("entities", nargs="+", help="names of the entities to forget")
    args = parser.parse_args(argv)
    if args.command == "request":
        return request(args.id, args.entities)
    if args.command == "run":
        methods = [m for m in args.methods.split(",") if m]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            parser.error(f"unknown method(s) {', '.join(unknown)}")
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            parser.error(f"--seeds {args.seeds!r}: whole numbers, comma-separated")
        unimodal = [m for m in args.unimodal.split(",") if m]
        if set(unimodal) - set(METHODS):
            parser.error(f"--unimodal: unknown method(s) {', '.join(sorted(set(unimodal) - set(METHODS)))}")
        return run(methods, seeds or [0], unimodal)
    return 2


if __name__ == "__main__":
    sys.exit(main())
