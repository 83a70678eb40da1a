"""Runs whose process died: found, failed, and their work queued again.

A run executed in a process that is then killed (`mlu run` SIGKILLed, a machine that reboots under
`make ui`) stays STARTED in the instance forever, and with `max_concurrent_runs: 1` every queued
run behind it waits for good. Dagster's run monitoring (dagster_home/dagster.yaml) fails runs stuck
while *starting*, but the default run launcher cannot tell whether a started run's process is
alive. So every run records its process (the `mlu/pid`, `mlu/host` tags for `mlu run`; Dagster's
"Started process for run (pid: …)" event for a run the daemon launched), and a sweep fails each
in-progress run whose process is gone on this host:

- the `orphaned_runs` sensor (running by default, so with the daemon: `make ui`, `dagster dev`)
  fails them and queues each one's job and partition again, under the same config (an unlearning
  sequence resumes from its last finished step);
- `mlu run` fails them before it starts (it then does their work itself).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import dagster as dg

PID_TAG = "mlu/pid"
HOST_TAG = "mlu/host"
RESUMES_TAG = "mlu/resumes"  # on a run queued again: the run it takes over from
IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
# A process born this long after its run started is another process that got the pid again.
PID_REUSE_SLACK_S = 5.0


def process_tags() -> dict[str, str]:
    """Tags that name the current process, for a run executed in it (execute_in_process)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _run_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The process executing the run: our tag, else the pid of Dagster's own engine event."""
    if run.tags.get(PID_TAG):
        return int(run.tags[PID_TAG])
    for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        if data and "pid" in data.metadata and (event.message or "").startswith("Started process for run"):
            return int(data.metadata["pid"].value)
    return None


def _process(pid: int) -> tuple[float | None, bool] | None:
    """(start time, zombie) of process `pid`, None when there is none; the start time is None
    where it cannot be read (no /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # there, another user's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), fields[0] == "Z"
    except (OSError, ValueError, IndexError, StopIteration):
        return None, False


def _alive(pid: int, since: float | None) -> bool:
    """Whether process `pid` runs and is not a newer process that reused the pid."""
    found = _process(pid)
    if found is None:
        return False
    started, zombie = found
    if zombie:
        return False
    return since is None or started is None or started <= since + PID_REUSE_SLACK_S


def orphaned_runs(instance: dg.DagsterInstance) -> list[tuple[dg.DagsterRun, str]]:
    """(run, why) for every in-progress run whose process is gone on this host. A run with no
    recorded process, or one from another host, is left alone: nothing here can tell."""
    host = socket.gethostname()
    out = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=list(IN_PROGRESS))):
        run = record.dagster_run
        if run.tags.get(HOST_TAG, host) != host:
            continue
        pid = _run_pid(instance, run)
        if pid is None:
            continue
        since = record.start_time or record.create_timestamp.timestamp()
        if not _alive(pid, since):
            out.append((run, f"its process (pid {pid}) is gone: killed or crashed while the run was {run.status.value}"))
    return out


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Marks every orphaned run failed (with the reason in its log); returns them."""
    failed = []
    for run, why in orphaned_runs(instance):
        instance.report_engine_event(f"mlu: run {run.run_id} failed by the orphan sweep: {why}", run)
        instance.report_run_failed(run, f"Orphaned run: {why}. Its work is queued again by the orphaned_runs sensor "
                                        "(with the daemon running) or redone by the next `mlu run`.")
        failed.append(run)
    return failed


def requeue_request(run: dg.DagsterRun) -> dg.RunRequest:
    """The same job, partition and config as `run`, as a new run (run key: the orphan's id)."""
    keep = {k: v for k, v in run.tags.items() if not k.startswith("dagster/") and k not in (PID_TAG, HOST_TAG)}
    return dg.RunRequest(run_key=f"resume:{run.run_id}", job_name=run.job_name, run_config=run.run_config,
                         partition_key=run.tags.get("dagster/partition"), tags={**keep, RESUMES_TAG: run.run_id})


def build_orphaned_runs_sensor(jobs, minimum_interval_seconds: int = 15) -> dg.SensorDefinition:
    """The sweep as a sensor of the code location whose `jobs` it may queue again."""
    names = {job.name for job in jobs}

    @dg.sensor(name="orphaned_runs", jobs=list(jobs), minimum_interval_seconds=minimum_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Fails runs whose process died (a killed `mlu run`, a crash) so the queue moves on, "
                           "and queues their work again.")
    def orphaned_runs_sensor(context: dg.SensorEvaluationContext):
        failed = fail_orphaned_runs(context.instance)
        for run in failed:
            context.log.warning(f"failed orphaned run {run.run_id} ({run.job_name}"
                                f"{' ' + run.tags['dagster/partition'] if 'dagster/partition' in run.tags else ''})")
        requests = [requeue_request(run) for run in failed if run.job_name in names]
        if not failed:
            return dg.SkipReason(f"no orphaned run at {time.strftime('%H:%M:%S')}")
        return dg.SensorResult(run_requests=requests)

    return orphaned_runs_sensor
