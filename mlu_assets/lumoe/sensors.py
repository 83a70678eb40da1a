"""Unlearning requests arriving as files: each new file in the requests folder is checked
against the entity catalog; an accepted one becomes a new request partition, whose experts
(one per base model) declarative automation trains, then lumoe_sequence re-evaluates. A request
file whose content changes re-trains its experts through run requests. The cursor remembers every
file seen (by name and content digest) and run keys repeat nothing."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from ..partitions import model_partitions, request_partitions
from ..resources import BenchmarkSettings, RouterSettings
from .assets import lumoe_experts


@dg.sensor(target=[lumoe_experts], minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Turns files in the unlearning requests folder (MLU_REQUESTS_DIR) into experts.")
def unlearning_requests(context: dg.SensorEvaluationContext, benchmark: BenchmarkSettings, routing: RouterSettings):
    import pandas as pd

    from mlu_training.benchmark import TASKS
    from mlu_training.lumoe.requests import RequestRejected, accepted_request_path, read_request
    from mlu_training.paths import atomic_write_bytes

    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    folder = Path(routing.requests_dir)
    existing = set(context.instance.get_dynamic_partitions(request_partitions.name))
    add = [t for t in TASKS if t not in existing]  # the benchmark's own four requests
    catalog_path = Path(benchmark.data_dir) / "tables" / "entity_catalog.parquet"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    fresh = [(f, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]
    fresh = [(f, digest) for f, digest in fresh if seen.get(f.name) != digest]
    if fresh and not catalog_path.is_file():
        return dg.SkipReason("requests are waiting, but entity_catalog is not materialized yet")
    runs, rejected = [], []
    catalog = pd.read_parquet(catalog_path) if fresh else None
    for path, digest in fresh:
        seen[path.name] = digest
        try:
            request = read_request(path, catalog)
        except RequestRejected as why:
            rejected.append(str(why))
            atomic_write_bytes(path.with_suffix(".rejected.txt"), f"{why}\n".encode())
            context.log.warning(f"unlearning request rejected: {why}")
            continue
        stored = accepted_request_path(benchmark.data_dir, request.id)
        atomic_write_bytes(stored, json.dumps(request.as_dict(), ensure_ascii=False).encode())
        if request.id not in existing:
            add.append(request.id)  # new: the automation trains its experts
            continue
        for model in context.instance.get_dynamic_partitions(model_partitions.name):  # changed: train again
            runs.append(dg.RunRequest(run_key=f"request:{request.id}:{model}:{digest[:16]}", tags={"mlu/request": request.id},
                                      partition_key=dg.MultiPartitionKey({"model": model, "request": request.id})))
    if not runs and not add and not rejected:
        return dg.SkipReason(f"no new request in {folder}")
    return dg.SensorResult(run_requests=runs, cursor=json.dumps(seen),
                           dynamic_partitions_requests=[request_partitions.build_add_request(add)] if add else [])
