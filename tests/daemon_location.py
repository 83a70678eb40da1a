"""A trivial code location for the daemon test (tests/test_runs.py): a job that blocks until the
test opens a gate, a quick one, and the project's orphaned-runs sensor over both."""

import os
import time
from pathlib import Path

import dagster as dg

from mlu_assets.runs import build_orphaned_runs_sensor

GATE = Path(os.environ.get("MLU_TEST_GATE", "."))


@dg.op
def wait_for_gate(context: dg.OpExecutionContext):
    (GATE / f"started-{context.run_id}").write_text(str(os.getpid()))
    deadline = time.time() + 300
    while not (GATE / "open").exists():
        if time.time() > deadline:
            raise RuntimeError("the gate never opened")
        time.sleep(0.2)


@dg.job
def block():
    wait_for_gate()


@dg.op
def mark_done(context: dg.OpExecutionContext):
    (GATE / f"done-{context.run_id}").write_text("ok")


@dg.job
def quick():
    mark_done()


defs = dg.Definitions(jobs=[block, quick],
                      sensors=[build_orphaned_runs_sensor([block, quick], minimum_interval_seconds=5)])
