"""`mlu run`: the main job on the embedded defaults, recorded in DAGSTER_HOME like a UI launch.

The benchmark group, the default base model and its knowledge filter, one run per unlearning
method, LUMoE's experts and sequence, then the report. What is up to date is reused (the base
model, finished sequences, registered experts).
"""

from __future__ import annotations

import argparse
import sys
import time


def _print_leaderboard(board: list[dict], html: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mlu leaderboard (after the last request; drift = the stability objective, 0 = stable)")
    columns = list(board[0]) if board else []
    if len({row.get("base model") for row in board}) == 1:
        columns.remove("base model")  # one base model: the column says nothing
    for col in columns:
        table.add_column(col, justify="left" if col in ("method", "base model", "order") else "right")
    for row in board:
        table.add_row(*["–" if v is None or v != v else (f"{v:.2f}" if isinstance(v, float) else str(v))
                        for v in (row[c] for c in columns)])
    Console().print(table)
    print(f"report: {html}")


def run(methods: list[str]) -> int:
    import os

    import dagster as dg

    from mlu_training.lumoe.requests import BENCHMARK_TASKS
    from mlu_training.models.sources import default_key
    from mlu_training.paths import PROJECT_ROOT

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))  # as the Makefile does
    from .definitions import defs
    from .lumoe.assets import request_partitions
    from .models.assets import model_partitions

    instance = dg.DagsterInstance.get()
    assets = list(defs.assets)
    model = default_key(os.environ.get("MLU_BASE_MODEL") or None)
    for partitions, keys in ((model_partitions, [model]), (request_partitions, BENCHMARK_TASKS)):
        have = set(instance.get_dynamic_partitions(partitions.name))
        instance.add_dynamic_partitions(partitions.name, [k for k in keys if k not in have])

    def step(what: str, selection, partition_key: str | None = None) -> bool:
        """One run, recorded in DAGSTER_HOME like a launch from the UI."""
        result = dg.materialize(assets, resources=defs.resources, instance=instance, raise_on_error=False,
                                selection=selection, partition_key=partition_key)
        if not result.success:
            print(f"mlu: {what} failed; see the run in the Dagster UI", file=sys.stderr)
        return result.success

    started = time.perf_counter()
    print(f"mlu: benchmark, then the base model {model!r} …", flush=True)
    if not (step("the benchmark group", dg.AssetSelection.groups("benchmark"))
            and step("the models group", dg.AssetSelection.groups("models"), model)):
        return 1
    for method in methods:
        t = time.perf_counter()
        print(f"mlu: unlearning with {method} …", flush=True)
        if not step(method, ["unlearning_sequence"], dg.MultiPartitionKey({"method": method, "model": model})):
            return 1
        print(f"mlu: {method} done in {time.perf_counter() - t:.0f} s", flush=True)
    print("mlu: LUMoE experts A-D, then the sequence …", flush=True)
    t = time.perf_counter()
    for task in BENCHMARK_TASKS:
        if not step(f"the expert of task {task}", ["lumoe_experts"], dg.MultiPartitionKey({"model": model, "request": task})):
            return 1
    if not step("lumoe_sequence", ["lumoe_sequence"], model):
        return 1
    print(f"mlu: LUMoE done in {time.perf_counter() - t:.0f} s; the report …", flush=True)
    result = dg.materialize(assets, resources=defs.resources, instance=instance, raise_on_error=False, selection=["report"])
    if not result.success:
        print("mlu: report failed; see the run in the Dagster UI", file=sys.stderr)
        return 1
    value = result.output_for_node("report")
    _print_leaderboard(value["leaderboard"], value["html"])
    print(f"mlu: done in {time.perf_counter() - started:.0f} s. Look at it:\n"
          "  make ui   (Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000)")
    return 0


def request(request_id: str, entities: list[str]) -> int:
    """Check the request against the entity catalog now, so a typo is caught at the prompt."""
    import os
    from pathlib import Path

    import pandas as pd

    from mlu_training.lumoe.requests import RequestRejected, read_request, write_request
    from mlu_training.paths import default_data_dir, default_requests_dir

    folder = Path(os.environ.get("MLU_REQUESTS_DIR") or default_requests_dir())
    catalog = Path(os.environ.get("MLU_DATA_DIR") or default_data_dir()) / "tables" / "entity_catalog.parquet"
    path = write_request(folder, request_id, entities)
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
        return run(methods)
    return 2


if __name__ == "__main__":
    sys.exit(main())
