"""A run whose process dies is failed, the queue moves on, and its work is queued again: with a
real `dagster-daemon` on the project's dagster.yaml, and the sweep itself on real SQLite."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(what, predicate, timeout_s: float, poll_s: float = 0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    """TERM, then KILL, the process and every child it started (code server, run workers)."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A DAGSTER_HOME with the project's own dagster.yaml, a workspace on the trivial location."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    (tmp_path / "gate").mkdir()
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - python_file:\n      relative_path: {PROJECT / 'tests' / 'daemon_location.py'}\n"
        f"      working_directory: {PROJECT}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLU_TEST_GATE": str(tmp_path / "gate"),
           "PYTHONPATH": os.pathsep.join([str(PROJECT), str(PROJECT / "tests"), os.environ.get("PYTHONPATH", "")])}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return {"home": home, "env": env, "gate": tmp_path / "gate", "workspace": tmp_path / "workspace.yaml", "tmp": tmp_path}


def start_then_kill_a_run(home) -> str:
    """A run executed in a process of its own, as `mlu run` does, SIGKILLed mid-step."""
    code = ("import dagster as dg; from daemon_location import block; from mlu_assets.runs import process_tags\n"
            "block.execute_in_process(instance=dg.DagsterInstance.get(), tags=process_tags())")
    worker = subprocess.Popen([sys.executable, "-c", code], env=home["env"], cwd=PROJECT)
    try:
        started = wait_for("the run to start its step", lambda: list(home["gate"].glob("started-*")), 120)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    return started[0].name.removeprefix("started-")


def test_a_killed_run_is_failed_and_the_next_queued_run_starts_by_itself(home):
    orphan = start_then_kill_a_run(home)
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(orphan).status == dg.DagsterRunStatus.STARTED  # left behind by the kill
        launched = subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(home["workspace"]), "-j", "quick"],
                                  env=home["env"], cwd=PROJECT, capture_output=True, text=True, timeout=180)
        assert launched.returncode == 0, launched.stderr[-2000:]
        [queued] = instance.get_runs(dg.RunsFilter(job_name="quick"))
        assert queued.status == dg.DagsterRunStatus.QUEUED
        log = open(home["tmp"] / "daemon.log", "w")
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(home["workspace"])], env=home["env"],
                                  cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for("the queued run to succeed by itself",
                     lambda: instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.SUCCESS, 240, 1)
            failed = instance.get_run_by_id(orphan)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            messages = [e.message for e in instance.all_logs(orphan) if e.message]
            assert any("its process (pid" in m and "is gone" in m for m in messages), messages[-5:]
            # The orphan's work is queued again (same job and config), and runs once the gate opens.
            [resumed] = instance.get_runs(dg.RunsFilter(tags={"mlu/resumes": orphan}))
            assert resumed.job_name == "block"
            (home["gate"] / "open").touch()
            wait_for("the orphan's work to finish", lambda: instance.get_run_by_id(resumed.run_id).status
                     == dg.DagsterRunStatus.SUCCESS, 240, 1)
        finally:
            stop(daemon)
            log.close()


def test_the_sweep_fails_only_runs_whose_process_is_gone(home):
    """What `mlu run` does before it starts: a killed run is failed, a live one is left alone."""
    from mlu_assets.runs import fail_orphaned_runs, orphaned_runs

    orphan = start_then_kill_a_run(home)
    code = ("import dagster as dg; from daemon_location import block; from mlu_assets.runs import process_tags\n"
            "block.execute_in_process(instance=dg.DagsterInstance.get(), tags=process_tags())")
    live = subprocess.Popen([sys.executable, "-c", code], env=home["env"], cwd=PROJECT)
    try:
        wait_for("a second run to start", lambda: len(list(home["gate"].glob("started-*"))) == 2, 120)
        with dg.DagsterInstance.get() as instance:
            assert [run.run_id for run, _ in orphaned_runs(instance)] == [orphan]
            assert [run.run_id for run in fail_orphaned_runs(instance)] == [orphan]
            assert instance.get_run_by_id(orphan).status == dg.DagsterRunStatus.FAILURE
            others = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            assert len(others) == 1 and others[0].run_id != orphan  # the live run is untouched
            assert fail_orphaned_runs(instance) == []
    finally:
        (home["gate"] / "open").touch()
        live.wait(60)


def test_the_project_sensor_queues_a_partitioned_stage_again():
    """On mlu's own code location: an orphaned unlearning run comes back as the same job,
    partition and config, and the orphan is failed."""
    import socket

    from mlu_assets.definitions import defs

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_models", ["tiny"])
        job = defs.resolve_job_def("unlearning_job")
        config = {"ops": {"unlearning_sequence": {"config": {"training": {"seed": 1}}}}}
        run = instance.create_run_for_job(job, run_config=config, tags={
            "dagster/partition": "gd|tiny", "mlu/pid": "999999999", "mlu/host": socket.gethostname()})
        instance.handle_run_event(run.run_id, dg.DagsterEvent("PIPELINE_START", job_name=job.name))
        sensor = next(s for s in defs.sensors if s.name == "orphaned_runs")
        [request] = sensor(dg.build_sensor_context(instance=instance, definitions=defs)).run_requests
        assert (request.job_name, request.partition_key, request.run_config) == ("unlearning_job", "gd|tiny", config)
        assert request.tags["mlu/resumes"] == run.run_id
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert isinstance(sensor(dg.build_sensor_context(instance=instance, definitions=defs)), dg.SkipReason)
