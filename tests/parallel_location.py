"""Definitions for the side-by-side test of `mlu run` (tests/test_concurrency.py): one partitioned
asset that records which process ran which partition and when, and fails where told to."""

import json
import os
import time
from pathlib import Path

import dagster as dg

LOG = Path(os.environ.get("MLU_TEST_PARALLEL_LOG", "."))
lanes = dg.StaticPartitionsDefinition(["ga", "npo", "kl"])


@dg.asset(partitions_def=lanes)
def recorded(context: dg.AssetExecutionContext, config: dg.PermissiveConfig):
    began = time.time()
    if config.model_dump().get("fail"):
        raise RuntimeError("told to fail")
    time.sleep(1.0)  # long enough that two workers overlap
    with open(LOG / "runs.jsonl", "a") as f:
        f.write(json.dumps({"partition": context.partition_key, "label": config.model_dump().get("label"),
                            "pid": os.getpid(), "began": began, "ended": time.time()}) + "\n")


recorded_job = dg.define_asset_job("recorded_job", selection=[recorded], partitions_def=lanes)
defs = dg.Definitions(assets=[recorded], jobs=[recorded_job])
