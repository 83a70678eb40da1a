"""`mlu run` prints its progress and the leaderboard, not Dagster's per-event DEBUG lines nor
known warnings; the events are still in the run's log. A real stage executed the way `mlu run`
executes each of its stages (execute_stage), in a process of its own, on a real instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

PROJECT = Path(__file__).resolve().parent.parent

STAGE = '''
import warnings
import dagster as dg
from mlu_assets.cli import execute_stage, quiet

quiet()

@dg.op
def noisy(context):
    context.log.info("an info line of the step")
    warnings.warn("`use_cache=True` is incompatible with gradient checkpointing", FutureWarning)
    warnings.warn("this API is in beta", dg.BetaWarning)
    return 1

@dg.job
def stage():
    noisy()

result = execute_stage(stage, dg.DagsterInstance.get(), None, {})
print("mlu: stage done", result.success, result.run_id)
'''


def test_a_stage_prints_nothing_of_its_events_and_keeps_them_in_the_run(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", STAGE], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout + out.stderr
    assert "mlu: stage done True" in out.stdout
    for noise in ("DEBUG", "STEP_START", "an info line", "FutureWarning", "BetaWarning", "gradient checkpointing"):
        assert noise not in printed, (noise, printed[:3000])
    assert len(printed.strip().splitlines()) == 1, printed
    run_id = out.stdout.split()[-1]
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        events = instance.all_logs(run_id)
        kinds = {e.dagster_event.event_type for e in events if e.dagster_event}
        assert {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.RUN_SUCCESS} <= kinds
        assert any(e.user_message == "an info line of the step" for e in events)
