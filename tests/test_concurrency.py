"""Two runs at once on the embedded default (dagster.yaml's max_concurrent_runs, `mlu run`'s
MLU_PARALLEL_RUNS): the SQLite stores of Dagster and MLflow take two writers, measured here with
two processes writing at the same time, not assumed. And the thread rule the runs use."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import pytest

from mlu_training.threads import threads_per_run

WRITES = 12  # per process: enough to overlap for seconds, few enough to stay quick
REGISTERED = "mlu-concurrency-test"


def _dagster_writer(home: str, name: str, start) -> list[bool]:
    import os

    os.environ["DAGSTER_HOME"] = home
    import dagster as dg

    @dg.asset(name=f"written_by_{name}")
    def written():
        return 1

    job = dg.define_asset_job(f"job_{name}", selection=[written.key])
    defs = dg.Definitions(assets=[written], jobs=[job])
    instance = dg.DagsterInstance.get()
    start.wait()
    return [defs.resolve_job_def(f"job_{name}").execute_in_process(instance=instance, raise_on_error=False).success
            for _ in range(WRITES)]


def _mlflow_writer(uri: str, name: str, start) -> int:
    from mlu_training.mlflow_store import MlflowStore

    store = MlflowStore(uri, "concurrency")
    start.wait()
    for i in range(WRITES):
        with store.start_run(f"{name}-{i}", {"mlu.writer": name}) as run:
            store.log_curves(run.info.run_id, {f"metric/{k}": [float(k), float(i)] for k in range(20)})
        # Both processes add versions of one registered model, as experts trained side by side do.
        version = store.client.create_model_version(REGISTERED, f"runs:/{run.info.run_id}/model", run.info.run_id)
        store.client.set_registered_model_alias(REGISTERED, f"{name}-latest", version.version)
    return WRITES


def _together(target, args_of: list[tuple]) -> list:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:  # shut down after, not left running behind the test
        start = manager.Barrier(len(args_of))
        pool = ctx.Pool(len(args_of))
        try:
            results = pool.starmap(target, [(*args, start) for args in args_of])
        finally:
            # close + join lets the workers exit by themselves: Pool.__exit__'s terminate() once
            # hung the suite in its teardown
            pool.close()
            pool.join()
    return results


def test_two_processes_write_one_dagster_instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    import dagster as dg

    dg.DagsterInstance.get()  # the storage exists before the writers, as `mlu run` makes it before its workers
    results = _together(_dagster_writer, [(str(home), "left"), (str(home), "right")])
    assert all(ok for run in results for ok in run)

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    assert len(runs) == 2 * WRITES
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    for name in ("left", "right"):  # every materialization recorded, none lost to a locked database
        assert instance.get_latest_materialization_event(dg.AssetKey(f"written_by_{name}")) is not None
        records = instance.fetch_materializations(dg.AssetKey(f"written_by_{name}"), limit=100).records
        assert len(records) == WRITES


def test_two_processes_write_one_mlflow_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from mlu_training.mlflow_store import MlflowStore

    store = MlflowStore(uri, "concurrency")  # the schema, once, as `mlu run` makes it before its workers
    store.experiment_id()
    store.client.create_registered_model(REGISTERED)
    assert _together(_mlflow_writer, [(uri, "left"), (uri, "right")]) == [WRITES, WRITES]
    runs = store.search_runs({})
    assert len(runs) == 2 * WRITES
    assert all(len(r.data.metrics) == 20 for r in runs)
    history = store.client.get_metric_history(runs[0].info.run_id, "metric/7")
    assert [m.value for m in sorted(history, key=lambda m: m.step)][0] == 7.0
    versions = store.registry_versions(REGISTERED)  # numbered 1..24, none lost, none twice
    assert sorted(int(v.version) for v in versions) == list(range(1, 2 * WRITES + 1))
    aliases = store.client.get_registered_model(REGISTERED).aliases
    assert set(aliases) == {"left-latest", "right-latest"}


@pytest.mark.parametrize("cores, runs, explicit, expected", [
    (2, 2, None, 1), (2, 1, None, 2), (16, 2, None, 8), (2, 4, None, 1), (2, 2, 3, 3)])
def test_each_run_takes_its_share_of_the_cores(monkeypatch, cores, runs, explicit, expected):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert threads_per_run(runs, explicit) == expected


def test_the_queue_runs_as_many_at_once_as_mlu_run():
    import yaml

    from mlu_assets.settings import setting

    config = yaml.safe_load((Path(__file__).parents[1] / "dagster_home" / "dagster.yaml").read_text())
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == int(setting("MLU_PARALLEL_RUNS", {}))


def _stage(partition: str, label: str, fail: bool = False):
    from mlu_assets.cli import Stage

    return Stage(f"{partition} {label}", "recorded_job", partition,
                 {"ops": {"recorded": {"config": {"label": label, "fail": fail}}}}, side_by_side=True)


@pytest.fixture
def parallel_location(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLU_TEST_PARALLEL_LOG", str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the workers import parallel_location
    return tmp_path


def _recorded(folder: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]


def test_mlu_run_trains_independent_stages_side_by_side_in_their_order(parallel_location):
    from mlu_assets.cli import side_by_side

    # ga's projector-only run must come before ga's default run, as in the main job's plan.
    stages = [_stage("ga", "projector"), _stage("ga", "default"), _stage("npo", "default"), _stage("kl", "default")]
    timings: dict[str, float] = {}
    assert side_by_side(stages, 2, timings, "parallel_location:defs") == []
    runs = _recorded(parallel_location)
    assert sorted((r["partition"], r["label"]) for r in runs) == sorted((s.lane[1], s.what.split()[1]) for s in stages)
    ga = {r["label"]: r for r in runs if r["partition"] == "ga"}
    assert ga["projector"]["ended"] <= ga["default"]["began"]  # a partition's stages keep their order
    assert len({r["pid"] for r in runs}) == 2  # two worker processes
    spans = sorted((r["began"], r["ended"]) for r in runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # and some runs overlapped
    assert set(timings) == {s.what for s in stages}

    import dagster as dg

    records = dg.DagsterInstance.get().get_runs()  # recorded in the instance like launches from the UI
    assert len(records) == 4 and {r.status for r in records} == {dg.DagsterRunStatus.SUCCESS}


def test_a_failed_stage_stops_what_has_not_started(parallel_location):
    from mlu_assets.cli import side_by_side

    stages = [_stage("ga", "broken", fail=True), _stage("ga", "after"), _stage("npo", "default"), _stage("kl", "default")]
    failed = side_by_side(stages, 1, {}, "parallel_location:defs")  # one at a time: the order is known
    assert [s.what for s in failed] == ["ga broken"]
    assert not (parallel_location / "runs.jsonl").exists()  # nothing after the failure was started


def test_a_worker_that_breaks_is_a_failed_stage_with_its_reason(parallel_location, capsys):
    from mlu_assets.cli import Stage, side_by_side

    broken = Stage("a job nobody defined", "no_such_job", "ga", {}, side_by_side=True)
    assert side_by_side([broken, _stage("npo", "default")], 1, {}, "parallel_location:defs") == [broken]
    assert "a job nobody defined failed: " in capsys.readouterr().err  # the worker's exception, not a run to look up
