"""A new base model is evaluated by itself: the sensor turns registry versions and dropped
checkpoint folders into partitions (with a cursor, never twice), declarative automation runs the
whole chain for the new partition only, and the nightly schedule re-evaluates every model."""

import datetime
import json
import shutil

import dagster as dg
import mlflow
import pytest

from mlu_assets.models.sensors import new_base_models, nightly_reevaluation
from conftest import register_like_a_user, test_resources
from mlu_training.methods import METHODS
from mlu_training.models.sources import UnknownBaseModel, folder_key, resolve


def _tick(instance, resources, cursor=None):
    result = new_base_models(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
    added = [k for r in result.dynamic_partitions_requests for k in r.partition_keys]
    if added:
        instance.add_dynamic_partitions("base_models", added)  # what the daemon does with the request
    return result, added


def test_the_sensor_turns_registry_versions_and_folders_into_partitions(tmp_path, tiny_base):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    drop = tmp_path / "base_models"
    resources = test_resources(tmp_path, models={"models_dir": str(drop)}, mlflow={"tracking_uri": uri})
    with dg.instance_for_test() as instance:
        first, added = _tick(instance, resources)
        assert added == ["tiny"] and not first.run_requests  # the default model, nothing else yet

        ours = register_like_a_user(uri, tiny_base.path, {"mlu.model_partition": "tiny"}, copy=False)  # what base_model[tiny] registers
        theirs = register_like_a_user(uri, tiny_base.path, copy=False)  # someone else's
        second, added = _tick(instance, resources, first.cursor)
        assert (ours, theirs) == ("1", "2") and added == ["mlu-base-model-v2"]
        again, added = _tick(instance, resources, second.cursor)
        assert added == [] and not again.run_requests  # seen: not again

        # A folder is taken once it has stopped changing (a copy may still be running).
        shutil.copytree(tiny_base.path, drop / "my llava")
        (drop / "notes").mkdir()  # no config.json: not a checkpoint
        copying, added = _tick(instance, resources, again.cursor)
        assert added == []
        settled, added = _tick(instance, resources, copying.cursor)
        assert added == ["my-llava"] and not settled.run_requests
        assert resolve("my-llava", None, drop).path == drop / "my llava"
        quiet, added = _tick(instance, resources, settled.cursor)
        assert added == [] and not quiet.run_requests

        # New weights under the same name: evaluated again, once, under a run key of their own.
        (drop / "my llava" / "extra.bin").write_bytes(b"\0" * 10)
        changing, _ = _tick(instance, resources, quiet.cursor)
        assert not changing.run_requests
        changed, added = _tick(instance, resources, changing.cursor)
        [run] = changed.run_requests
        assert added == [] and run.partition_key == "my-llava" and run.run_key.startswith("base_model:my-llava:")
        after, _ = _tick(instance, resources, changed.cursor)
        assert not after.run_requests

        # A folder whose name cannot be a base model is said once, and skipped.
        shutil.copytree(tiny_base.path, drop / "tiny")
        warned, added = _tick(instance, resources, after.cursor)
        assert added == [] and "rename the folder" in " ".join(json.loads(warned.cursor)["complaints"])
        assert set(instance.get_dynamic_partitions("base_models")) == {"tiny", "mlu-base-model-v2", "my-llava"}


def test_partition_keys_say_where_the_weights_are(tmp_path):
    assert resolve("tiny", None, None).kind == "tiny"
    assert resolve("mlu-base-model-v7", None, None).version == "7"
    (tmp_path / "llava-1.6").mkdir()
    (tmp_path / "llava-1.6" / "config.json").write_text("{}")
    assert resolve("llava-1.6", str(tmp_path / "llava-1.6"), None).path == tmp_path / "llava-1.6"
    assert folder_key(tmp_path / "llava-1.6") == "llava-1.6"
    with pytest.raises(UnknownBaseModel, match="no checkpoint folder"):
        resolve("gone", None, tmp_path)
    with pytest.raises(ValueError, match="rename the folder"):
        folder_key(tmp_path / "mlu-base-model-v3")


def _materialized(instance, key: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def _requested(defs, result) -> dict[str, set]:
    return {k.to_user_string(): result.get_requested_partitions(k)
            for k in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(k)}


def _walk_the_chain(defs, instance, model: str, cursor: str) -> str:
    """Tick by tick, what the automation asks for once base model `model` exists, each step
    reported done before the next tick: the whole chain, in order, for that model only."""
    def tick(expected: dict) -> None:
        nonlocal cursor
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        assert _requested(defs, result) == expected

    # the robustness group's gold model (trained without task A) follows its base model too
    tick({"base_model": {model}, "knowledge_filter": {model}, "gold_model": {model}})
    tick({})  # requested once, not on every tick
    for key in ("base_model", "knowledge_filter", "gold_model"):
        _materialized(instance, key, model)
    tick({"unlearning_sequence": {f"{m}|{model}" for m in METHODS}, "lumoe_experts": {f"{model}|A", f"{model}|B"},
          "attacks": {f"{m}|{model}" for m in METHODS}})  # each sequence's final model attacked after it
    for m in METHODS:
        for key in ("unlearning_sequence", "attacks"):
            _materialized(instance, key, dg.MultiPartitionKey({"method": m, "model": model}))
    for r in "AB":
        _materialized(instance, "lumoe_experts", dg.MultiPartitionKey({"model": model, "request": r}))
    tick({"lumoe_sequence": {model}, "router_audit": {model}, "lumoe_attacks": {model}})
    for key in ("lumoe_sequence", "router_audit", "lumoe_attacks"):
        _materialized(instance, key, model)
    tick({"report": {None}})
    _materialized(instance, "report")
    tick({})  # all up to date: nothing starts
    return cursor


def test_a_new_base_model_runs_the_whole_chain_by_automation():
    from mlu_assets.definitions import defs

    with dg.instance_for_test() as instance:
        for key in ("mlubench_release", "entity_catalog", "qa_pairs", "raw_crawls", "validated_qa_pairs",
                    "benchmark_splits"):
            _materialized(instance, key)
        # The automation sensor ticks all along; the first tick only takes stock.
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert _requested(defs, first) == {}
        instance.add_dynamic_partitions("base_models", ["tiny"])  # what new_base_models adds first
        instance.add_dynamic_partitions("lumoe_requests", ["A", "B"])
        cursor = _walk_the_chain(defs, instance, "tiny", first.cursor)
        # A new base model arrives: its chain runs, and nothing of `tiny` again.
        instance.add_dynamic_partitions("base_models", ["mlu-base-model-v2"])
        cursor = _walk_the_chain(defs, instance, "mlu-base-model-v2", cursor)

        # The nightly re-evaluation: every model's knowledge filter, once per night.
        night = datetime.datetime(2026, 11, 23, 2, 0, tzinfo=datetime.timezone.utc)
        runs = nightly_reevaluation(dg.build_schedule_context(instance=instance, scheduled_execution_time=night))
        assert {(r.partition_key, r.run_key) for r in runs} == {
            ("tiny", "nightly:tiny:2026-11-23"), ("mlu-base-model-v2", "nightly:mlu-base-model-v2:2026-11-23")}
        _materialized(instance, "knowledge_filter", "tiny")  # what the nightly run of `tiny` does
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert _requested(defs, tick) == {"unlearning_sequence": {f"{m}|tiny" for m in METHODS},
                                          "lumoe_sequence": {"tiny"},
                                          # and what stresses them: the attacks, LUMoE's and its router's audit
                                          "attacks": {f"{m}|tiny" for m in METHODS},
                                          "lumoe_attacks": {"tiny"}, "router_audit": {"tiny"}}


def test_the_nightly_schedule_waits_for_a_model():
    with dg.instance_for_test() as instance:
        result = nightly_reevaluation(dg.build_schedule_context(instance=instance))
        assert isinstance(result, dg.SkipReason)


def test_sensors_and_schedule_run_by_default():
    from mlu_assets.definitions import defs

    sensors = {s.name: s for s in defs.sensors}
    assert {name for name, s in sensors.items() if s.default_status == dg.DefaultSensorStatus.RUNNING} == {
        "new_base_models", "unlearning_requests", "mlu_automation", "orphaned_runs"}
    [schedule] = defs.schedules
    assert schedule.name == "nightly_reevaluation" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "0 2 * * *"
