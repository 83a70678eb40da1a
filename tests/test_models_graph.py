"""The models group materialized for real: the base model trained, registered in MLflow and
loaded back from the registry; the knowledge filter keeping what the model knows; a baseline and
LUMoE on it; then a second base model arriving through the registry, evaluated as its own
partition."""

import json
import shutil
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
from conftest import register_like_a_user, test_resources

from mlu_assets.benchmark import assets as benchmark_assets
from mlu_assets.models import assets as model_assets
from mlu_assets.lumoe import assets as lumoe_assets
from mlu_assets.models.sensors import new_base_models
from mlu_assets.unlearning import assets as unlearning_assets
from mlu_training.data.splits import data_digest
from mlu_training.judge.local import is_refusal
from mlu_training.models.vlm import VisionLanguageModel
from mlu_training.texts import REFUSAL_ANSWER

# 120 steps: the tiny profile's known pairs and as many refusals (the model learns to decline) need
# more epochs than 40 steps gave the known pairs alone, or it knows none of the forget entities.
BASE_STEPS = 120
RUN_CONFIG = {"ops": {"base_model": {"config": {"steps": BASE_STEPS, "batch_size": 16}}}}
GA_ON_TINY = dg.MultiPartitionKey({"method": "ga", "model": "tiny"})


def test_base_model_and_knowledge_filter(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    resources = test_resources(tmp_path)
    assets = dg.load_assets_from_modules([benchmark_assets, model_assets, unlearning_assets, lumoe_assets])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_models", ["tiny"])
    benchmark = dg.materialize(assets, resources=resources, instance=instance,
                               selection=dg.AssetSelection.groups("benchmark"))
    result = dg.materialize(assets, resources=resources, run_config=RUN_CONFIG, instance=instance,
                            selection=dg.AssetSelection.groups("models"), partition_key="tiny")
    assert benchmark.success and result.success

    base = result.output_for_node("base_model")
    splits = benchmark.output_for_node("benchmark_splits")
    assert base.source == "tiny" and base.version == "1" and base.model_uri == "models:/mlu-base-model/1"
    assert base.name == "tiny"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("mlu-base-model", "1")
    assert version.tags["mlu.profile"] == "tiny" and version.tags["mlu.model_partition"] == "tiny"
    crawls = benchmark.output_for_node("raw_crawls")
    assert version.tags["mlu.data_digest"] == data_digest(splits, crawls)  # the pictures' bytes too
    other = crawls.assign(sha256=crawls["sha256"].where(crawls.index != 0, "0" * 64))
    assert data_digest(splits, other) != data_digest(splits, crawls)  # one picture changed: other data
    assert int(version.tags["mlu.num_parameters"]) == base.num_parameters
    assert float(version.tags["mlu.train_loss"]) == round(base.train_loss, 4)
    assert len(client.get_metric_history(base.run_id, "train/loss")) == BASE_STEPS
    run = client.get_run(base.run_id)  # its calibration, measured on held-out items, is on its run
    assert 0.0 <= run.data.metrics["calibration/refusal_unseen"] <= 1.0 and "calibration/refusal_known" in run.data.metrics

    # The registered model loads back from the registry and answers like the checkpoint.
    items = splits[splits["split"] == "eval"].head(4)
    crawls = benchmark.output_for_node("raw_crawls").set_index("image")
    frame = pd.DataFrame({"image": [crawls.loc[p, "file"] for p in items["image"]], "question": items["question"]})
    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    from_registry = mlflow.pyfunc.load_model("models:/mlu-base-model/1").predict(frame)
    direct = VisionLanguageModel.load(base.path)
    from PIL import Image
    assert list(from_registry) == direct.generate([Image.open(f).convert("RGB") for f in frame["image"]],
                                                  frame["question"].tolist())

    kept = result.output_for_node("knowledge_filter")
    evaluation = splits[splits["split"] == "eval"]
    assert (kept["base_score"] >= 2).all() and set(kept["qa_id"]) <= set(evaluation["qa_id"])
    assert {"base_response", "base_score", "judge_reason"} <= set(kept.columns)
    meta = result.asset_materializations_for_node("knowledge_filter")[0].metadata
    assert meta["num_items"].value == len(evaluation)
    assert meta["kept_fraction"].value == round(len(kept) / len(evaluation), 3)
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "kept_at_least_half"]
    fractions = (evaluation.assign(kept=evaluation["qa_id"].isin(kept["qa_id"])).groupby(["task", "role"])["kept"].mean())
    assert check.passed == bool((fractions >= 0.5).all())

    # Run again: the same recipe is reused, not retrained nor registered twice; the filter's
    # answers are read back, not asked again.
    assert meta["read_back"].value is False
    again = dg.materialize(assets, resources=resources, run_config=RUN_CONFIG, instance=instance,
                           selection=["base_model", "knowledge_filter"], partition_key="tiny")
    assert again.success
    assert again.asset_materializations_for_node("base_model")[0].metadata["reused"].value is True
    assert again.asset_materializations_for_node("knowledge_filter")[0].metadata["read_back"].value is True
    pd.testing.assert_frame_equal(again.output_for_node("knowledge_filter"), kept)
    assert again.output_for_node("base_model").version == "1"
    assert len(client.search_model_versions("name = 'mlu-base-model'")) == 1

    # Stage 3: one baseline over a two-task sequence, from the same stores.
    config = {"ops": {"unlearning_sequence": {"config": {"order": "BA", "training": {"steps": 2, "batch_size": 4}}}}}
    seq = dg.materialize(assets, resources=resources, run_config=config, instance=instance,
                         selection=["unlearning_sequence"], partition_key=GA_ON_TINY)
    assert seq.success
    value = seq.output_for_node("unlearning_sequence")
    assert value.method == "ga" and value.order == "BA"
    run = client.get_run(value.run_id)
    assert run.data.tags["mlu.method"] == "ga" and run.data.tags["mlu.order"] == "BA"
    assert run.data.tags["mlu.profile"] == "tiny" and run.data.tags["mlu.base_model"] == "models:/mlu-base-model/1"
    assert run.data.tags["mlu.model"] == "tiny"
    assert run.data.params["steps"] == "2" and run.data.params["targets"] == "language"
    for kind, role in (("forget_quality", "forget"), ("utility", "retain")):
        known = set(kept.loc[kept["role"] == role, "task"])  # a task side the base model knows nothing of has no score
        expected = {f"{kind}/{x}-U{y}" for x, y in (("B", "B"), ("B", "A"), ("A", "A")) if x in known}
        logged = {m for m in run.data.metrics if m.startswith(kind + "/") and not m.endswith(("/ci_low", "/ci_high"))}
        # stability over nothing measured is left out, never a perfect 0
        assert logged == expected and (f"stability/{kind}" in run.data.metrics) == bool(expected)
        for name in logged:  # every score with its 95 % interval, in MLflow
            assert run.data.metrics[f"{name}/ci_low"] <= run.data.metrics[name] <= run.data.metrics[f"{name}/ci_high"]
        if expected:  # each summary where its cells exist (order BA: "last" is A after A, "bwt" needs B)
            summaries = {"average", "worst_drop"} | ({"last"} if "A" in known else set()) | ({"bwt"} if "B" in known else set())
            assert {f"summary/{kind}/{s}" for s in summaries} <= set(run.data.metrics)
        for name in logged:
            x, y = name.split("/")[1].split("-")
            assert run.data.metrics[name] == getattr(value, kind)[y][x] and 0.0 <= run.data.metrics[name] <= 1.0
    assert len(client.get_metric_history(value.run_id, "train/loss/UB")) == 2
    artifacts = {a.path for a in client.list_artifacts(value.run_id, "heatmaps")} | \
                {a.path for a in client.list_artifacts(value.run_id, "answers")}
    assert artifacts == {"heatmaps/forget_quality_heatmap.png", "heatmaps/utility_heatmap.png", "answers/answers.jsonl"}
    assert "OPENAI_API_KEY" not in str(run.data.params) + str(run.data.tags)
    meta = seq.asset_materializations_for_node("unlearning_sequence")[0].metadata
    assert meta["forget_quality_X_UY"].value.startswith("| task") and "UB" in meta["utility_X_UY"].value
    # The same sequence again: read back, not retrained, and the MLflow run is not duplicated.
    again = dg.materialize(assets, resources=resources, run_config=config, instance=instance,
                           selection=["unlearning_sequence"], partition_key=GA_ON_TINY)
    assert again.output_for_node("unlearning_sequence").run_id == value.run_id
    assert again.asset_materializations_for_node("unlearning_sequence")[0].metadata["steps_reused"].value == 2

    # Stage 4: LUMoE experts for two requests, registered, loaded back; the sequence over them.
    instance.add_dynamic_partitions("lumoe_requests", ["A", "B"])
    for task in ("A", "B"):
        assert dg.materialize(assets, resources=resources, instance=instance, selection=["lumoe_experts"],
                              partition_key=dg.MultiPartitionKey({"model": "tiny", "request": task})).success
    versions = {v.tags["mlu.task"]: v for v in client.search_model_versions("name = 'mlu-lumoe-expert'")}
    assert set(versions) == {"A", "B"}
    model = client.get_registered_model("mlu-lumoe-expert")
    assert model.aliases == {"task-A": versions["A"].version, "task-B": versions["B"].version}
    train = splits[(splits["split"] == "train") & (splits["task"] == "A") & (splits["role"] == "forget")]
    assert json.loads(versions["A"].tags["mlu.entities"]) == sorted(train["entity_id"].unique())
    assert versions["A"].tags["mlu.base_model_uri"] == "models:/mlu-base-model/1"
    forget_a = splits[(splits["split"] == "eval") & (splits["task"] == "A") & (splits["role"] == "forget")].head(4)
    frame = pd.DataFrame({"image": [crawls.loc[p, "file"] for p in forget_a["image"]], "question": forget_a["question"]})
    answers = mlflow.pyfunc.load_model("models:/mlu-lumoe-expert@task-A").predict(frame)
    # From the registry, on the base model: it says the refusal it was trained towards (a tiny
    # model's 30 steps may garble one of four, "Sor this question.", so three are asked for); the
    # base model alone never says that one (it declines in its own words, or answers).
    base_answers = mlflow.pyfunc.load_model("models:/mlu-base-model/1").predict(frame)
    assert sum(a == REFUSAL_ANSWER for a in answers) >= 3 and REFUSAL_ANSWER not in list(base_answers), \
        (answers, base_answers)
    lumoe = dg.materialize(assets, resources=resources, instance=instance, selection=["lumoe_sequence"],
                           partition_key="tiny")
    assert lumoe.success
    value = lumoe.output_for_node("lumoe_sequence")
    assert value.method == "lumoe" and value.order == "AB" and [r["after"] for r in value.router] == ["A", "B"]
    run = client.get_run(value.run_id)
    assert run.data.tags["mlu.method"] == "lumoe" and run.data.tags["mlu.router"] == "local"
    assert "stability/forget_quality" in run.data.metrics and "router/accuracy/UB" in run.data.metrics
    assert "router/retain_to_expert_rate/UB" in run.data.metrics
    assert (Path(resources["benchmark"].data_dir) / "tables" / "lumoe_sequence" / "tiny.json").is_file()
    # Nothing changed: the finished sequence is read back, not run nor logged again.
    lumoe_again = dg.materialize(assets, resources=resources, instance=instance, selection=["lumoe_sequence"],
                                 partition_key="tiny")
    assert lumoe_again.output_for_node("lumoe_sequence").run_id == value.run_id
    assert lumoe_again.asset_materializations_for_node("lumoe_sequence")[0].metadata["reused"].value is True
    assert lumoe_again.output_for_node("lumoe_sequence").forget_quality == value.forget_quality
    # Its MLflow run deleted: logged again from what was kept, not computed again.
    client.delete_run(value.run_id)
    relogged = dg.materialize(assets, resources=resources, instance=instance, selection=["lumoe_sequence"],
                              partition_key="tiny")
    assert relogged.asset_materializations_for_node("lumoe_sequence")[0].metadata["reused"].value is True
    new_run = client.get_run(relogged.output_for_node("lumoe_sequence").run_id)
    assert new_run.info.run_id != value.run_id and new_run.data.metrics == client.get_run(value.run_id).data.metrics

    # Stage 5: someone registers another base model; the sensor makes it a partition, which is
    # adopted (not registered twice) and has its own knowledge filter and experts.
    assert register_like_a_user(uri, base.path) == "2"
    tick = new_base_models(dg.build_sensor_context(instance=instance, resources=resources))
    [add] = tick.dynamic_partitions_requests
    assert add.partition_keys == ["mlu-base-model-v2"] and not tick.run_requests
    instance.add_dynamic_partitions("base_models", add.partition_keys)
    second = dg.materialize(assets, resources=resources, run_config=RUN_CONFIG, instance=instance,
                            selection=dg.AssetSelection.groups("models"), partition_key="mlu-base-model-v2")
    adopted = second.output_for_node("base_model")
    assert adopted.source == "registry" and adopted.model_uri == "models:/mlu-base-model/2"
    assert client.get_model_version("mlu-base-model", "2").tags["mlu.model_partition"] == "mlu-base-model-v2"
    assert len(client.search_model_versions("name = 'mlu-base-model'")) == 2
    # The same weights: the same answers, so the same items are known.
    assert list(second.output_for_node("knowledge_filter")["qa_id"]) == list(kept["qa_id"])
    assert (Path(resources["benchmark"].data_dir) / "tables" / "knowledge_filter" / "mlu-base-model-v2.parquet").is_file()
    on_v2 = dg.MultiPartitionKey({"model": "mlu-base-model-v2", "request": "A"})
    assert dg.materialize(assets, resources=resources, instance=instance, selection=["lumoe_experts"],
                          partition_key=on_v2).success
    aliases = client.get_registered_model("mlu-lumoe-expert").aliases
    assert set(aliases) == {"task-A", "task-B", "task-A-on-mlu-base-model-v2"}
    v2_expert = client.get_model_version("mlu-lumoe-expert", aliases["task-A-on-mlu-base-model-v2"])
    assert v2_expert.tags["mlu.model_partition"] == "mlu-base-model-v2"
    assert v2_expert.tags["mlu.base_model_uri"] == "models:/mlu-base-model/2"
    # The sensor remembers what it saw: the next tick starts nothing.
    quiet = new_base_models(dg.build_sensor_context(instance=instance, resources=resources, cursor=tick.cursor))
    assert not quiet.run_requests and not quiet.dynamic_partitions_requests

    # The same weights dropped as a folder: a base model of its own, sharing the finished work of
    # mlu-base-model-v2 but with its own MLflow run, so the report has a row for each.
    shutil.copytree(adopted.path, tmp_path / "base_models" / "copy-of-v2")
    instance.add_dynamic_partitions("base_models", ["copy-of-v2"])
    copy = dg.materialize(assets, resources=resources, instance=instance, selection=dg.AssetSelection.groups("models"),
                          partition_key="copy-of-v2")
    assert copy.output_for_node("base_model").key == adopted.key
    runs = {}
    for model in ("mlu-base-model-v2", "copy-of-v2"):
        done = dg.materialize(assets, resources=resources, run_config=config, instance=instance,
                              selection=["unlearning_sequence"],
                              partition_key=dg.MultiPartitionKey({"method": "ga", "model": model}))
        runs[model] = (done.output_for_node("unlearning_sequence"),
                       done.asset_materializations_for_node("unlearning_sequence")[0].metadata["steps_reused"].value)
    assert runs["copy-of-v2"][1] == 2  # computed once
    assert runs["copy-of-v2"][0].forget_quality == runs["mlu-base-model-v2"][0].forget_quality
    assert client.get_run(runs["copy-of-v2"][0].run_id).data.tags["mlu.model"] == "copy-of-v2"
    assert client.get_run(runs["mlu-base-model-v2"][0].run_id).data.tags["mlu.model"] == "mlu-base-model-v2"
