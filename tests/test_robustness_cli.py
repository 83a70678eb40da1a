"""`mlu robustness`: every asset of the group `robustness`, partition by partition, for the
partitions whose sequences a finished `mlu run` left."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mlu_assets.cli import robustness_plan
from mlu_assets.definitions import ROBUSTNESS_JOBS, defs
from mlu_assets.robustness import GROUP

PROJECT = Path(__file__).resolve().parent.parent


def test_every_asset_of_the_group_is_in_a_robustness_job():
    graph = defs.resolve_asset_graph()
    in_group = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == GROUP}
    assert dg.AssetKey("router_audit") in in_group
    assert set().union(*(job.selection.resolve(graph) for job in ROBUSTNESS_JOBS)) == in_group


def test_the_plan_runs_the_partitions_whose_sequences_are_materialized():
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_models", ["tiny", "other"])
    for model in ("tiny", "other"):
        for asset in ("base_model", "knowledge_filter"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=model))
    assert robustness_plan(defs, ROBUSTNESS_JOBS, instance, "tiny") == []  # no sequence yet: nothing to audit
    for model in ("tiny", "other"):
        instance.report_runless_asset_event(dg.AssetMaterialization("lumoe_sequence", partition=model))
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "unlearning_sequence", partition=dg.MultiPartitionKey({"method": "ga", "model": "tiny"})))
    plan = robustness_plan(defs, ROBUSTNESS_JOBS, instance, "tiny")
    assert ("gold_model, lumoe_attacks, router_audit for tiny", "robustness_model_job", "tiny") in plan
    assert all(partition != "other" for _, _, partition in plan)  # only the default base model
    jobs = [job for _, job, _ in plan]
    # the attacks read the gold model: the per-model job runs first; only the sequence that ran is attacked
    assert jobs == ["robustness_model_job", "robustness_method_job"]
    assert [str(partition) for _, _, partition in plan] == ["tiny", "ga|tiny"]


def test_mlu_robustness_before_any_run_says_what_to_do(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MLU_DATA_DIR": str(tmp_path / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    out = subprocess.run([sys.executable, "-m", "mlu_assets.cli", "robustness"], capture_output=True, text=True,
                         cwd=PROJECT, env=env)
    assert out.returncode == 1 and "run `mlu run` first" in out.stderr
