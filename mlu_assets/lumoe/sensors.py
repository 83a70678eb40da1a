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


def _signature(path: Path) -> str:
    """What a request file is now, cheaply, for the cursor: its content digest, or (a link, a
    folder, something unreadable) what it is instead, so a refused entry is refused once."""
    from mlu_training.lumoe.requests import RequestRejected, read_request_bytes

    try:
        return hashlib.sha256(read_request_bytes(path)).hexdigest()
    except RequestRejected as why:
        return "refused:" + hashlib.sha256(str(why).encode()).hexdigest()[:16]


@dg.sensor(target=[lumoe_experts], minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Turns files in the unlearning requests folder (MLU_REQUESTS_DIR) into experts.")
def unlearning_requests(context: dg.SensorEvaluationContext, benchmark: BenchmarkSettings, routing: RouterSettings):
    """Each file on its own: one that cannot be read or is refused (a link, a folder, a bad id or
    content) gets its `<id>.rejected.txt` and never stops the others."""
    import pandas as pd

    from mlu_training.benchmark import TASKS
    from mlu_training.lumoe.requests import (RequestRejected, accepted_request_path, read_request, rejection_path,
                                             served_entities)
    from mlu_training.paths import atomic_write_bytes

    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    folder = Path(routing.requests_dir)
    existing = set(context.instance.get_dynamic_partitions(request_partitions.name))
    add = [t for t in TASKS if t not in existing]  # the benchmark's own four requests
    tables = Path(benchmark.data_dir) / "tables"
    catalog_path = tables / "entity_catalog.parquet"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    fresh = [(f, _signature(f)) for f in files]
    fresh = [(f, digest) for f, digest in fresh if seen.get(f.name) != digest]
    if fresh and not catalog_path.is_file():
        return dg.SkipReason("requests are waiting, but entity_catalog is not materialized yet")
    runs, rejected = [], []
    catalog, served = None, {}
    if fresh:  # only then are the catalog, the splits and the accepted requests read
        catalog = pd.read_parquet(catalog_path)
        splits_path = tables / "benchmark_splits.parquet"
        served = served_entities(benchmark.data_dir, pd.read_parquet(splits_path) if splits_path.is_file() else None)
    for path, digest in fresh:
        seen[path.name] = digest
        try:
            request = read_request(path, catalog, served)
        except RequestRejected as why:
            rejected.append(str(why))
            try:
                atomic_write_bytes(rejection_path(folder, path.stem), f"{why}\n".encode())
            except OSError as e:  # the reason stays in the tick's log
                context.log.warning(f"could not write the rejection of {path.name}: {e}")
            context.log.warning(f"unlearning request rejected: {why}")
            continue
        except Exception as e:  # noqa: BLE001 — one bad file never stops the tick for the others
            rejected.append(f"{path.name}: {type(e).__name__}: {e}")
            context.log.error(f"unlearning request {path.name} could not be processed: {type(e).__name__}: {e}")
            continue
        rejection_path(folder, request.id).unlink(missing_ok=True)  # fixed: the old reason no longer holds
        served.update({e: request.id for e in request.entity_ids})
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
