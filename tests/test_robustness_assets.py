"""The robustness group's attack assets materialized for real, on a finished run's tables."""

from __future__ import annotations


def test_attacks_asset_logs_one_run_and_reads_it_back(tmp_path, finished_run, tiny_world, tiny_base):
    """`attacks` materialized for real on a finished run's tables: a sequence that left no checkpoint
    (its final model is the base model) attacked, with the base model itself standing as gold, so
    the comparison with gold must read "indistinguishable": KS p-value 1, privacy leak 0."""
    import shutil

    import dagster as dg
    import mlflow
    import pandas as pd
    from conftest import test_resources

    from mlu_assets.benchmark import assets as benchmark_assets
    from mlu_assets.io import to_json
    from mlu_assets.lumoe import assets as lumoe_assets
    from mlu_assets.models import assets as model_assets
    from mlu_assets.robustness import attack_assets
    from mlu_assets.unlearning import assets as unlearning_assets
    from mlu_training.data.crawls import build_raw_crawls
    from mlu_training.models.declining import declines_for
    from mlu_training.mlflow_store import MlflowStore
    from mlu_training.robustness.attacks import ATTACK_MEASURES, ATTACKS, BYPASS, UNATTACKED, attack_metric, collect_attacks
    from mlu_training.robustness.router_audit import robustness_section_html
    from mlu_training.robustness.gold import GOLD_KS, GoldModelRef, privleak_metric
    from mlu_training.robustness.mia import MIA_SCORES, mia_metric
    from mlu_training.sequences import SequenceSummary

    data = tmp_path / "data"
    shutil.copytree(finished_run["data_dir"], data)
    tables = data / "tables"
    tiny_world["qa"].to_parquet(tables / "validated_qa_pairs.parquet")
    # Membership inference asks about entities outside the profile: their pictures, as raw_crawls
    # holds every image of the release in a real run (here it holds the profile's only).
    unseen = declines_for(tiny_world["qa"], tiny_world["splits"]).unseen
    crawls = pd.concat([tiny_world["crawls"], build_raw_crawls(sorted(set(unseen["image"])), tmp_path / "images", size=32)])
    crawls.to_parquet(tables / "raw_crawls.parquet")
    (tables / "unlearning_sequence" / "ga").mkdir(parents=True)
    (tables / "unlearning_sequence" / "ga" / "tiny.json").write_bytes(to_json(SequenceSummary(
        "ga", "ABCD", "no-run", "0" * 64, {}, {}, {}, steps_reused=0)))
    (tables / "gold_model").mkdir()
    (tables / "gold_model" / "tiny.json").write_bytes(to_json(GoldModelRef(
        "tiny", "A", [], str(tiny_base.path), "itself", "1", "models:/mlu-base-model/1")))
    resources = test_resources(tmp_path)
    assets = dg.load_assets_from_modules([benchmark_assets, model_assets, unlearning_assets, lumoe_assets, attack_assets])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_models", ["tiny"])
    key = dg.MultiPartitionKey({"method": "ga", "model": "tiny"})

    def materialize():
        result = dg.materialize(assets, resources=resources, instance=instance, partition_key=key,
                                selection=dg.AssetSelection.assets(attack_assets.attacks))
        assert result.success
        return result.output_for_node("attacks"), result.asset_materializations_for_node("attacks")[0].metadata

    metrics, meta = materialize()
    scored = {attack_metric(a, m) for a in ATTACKS if a != BYPASS for m in ATTACK_MEASURES} | {mia_metric(s) for s in MIA_SCORES}
    assert set(metrics) == scored | {f"{m}/ci_{b}" for m in scored for b in ("low", "high")} \
        | {privleak_metric(s) for s in MIA_SCORES} | {privleak_metric(), GOLD_KS}
    assert metrics[GOLD_KS] == 1.0 and all(metrics[privleak_metric(s)] == 0.0 for s in MIA_SCORES)
    assert all(0.0 <= metrics[f"{m}/ci_low"] <= metrics[m] <= metrics[f"{m}/ci_high"] <= 1.0 for m in scored)
    # Nothing was unlearned (the final model is the base model, which knows these items): what is
    # still answered shows as forget correctness, well above what refusals score as forget quality.
    assert metrics[attack_metric(UNATTACKED, "forget_correctness")] > metrics[attack_metric(UNATTACKED)]
    run = mlflow.MlflowClient(resources["mlflow"].tracking_uri).get_run(meta["mlflow_run_id"].value)
    assert run.data.metrics == metrics and meta["reused"].value is False
    assert run.data.tags["mlu.kind"] == "robustness" and run.data.tags["mlu.method"] == "ga"
    assert run.data.tags["mlu.model"] == "tiny" and run.data.tags["mlu.gold_model"] == "models:/mlu-base-model/1"
    assert run.data.params["relearn_steps"] == "10" and run.data.params["relearn_share"] == "0.1"
    again, meta_again = materialize()  # the same key: the run is read back, nothing recomputed
    assert meta_again["reused"].value is True and meta_again["mlflow_run_id"].value == meta["mlflow_run_id"].value
    assert again == metrics
    # The report's Robustness section reads the run back: a row for ga with each attack's interval.
    found = collect_attacks(MlflowStore(resources["mlflow"].tracking_uri), resources["benchmark"].profile)
    assert found == {("tiny", "ga"): metrics}
    section, _ = robustness_section_html({}, tmp_path / "report", found)
    value = metrics[attack_metric("int8")]
    assert "Attacks on every method" in section and "<td>ga</td>" in section
    assert f"{value:.2f} [{metrics[attack_metric('int8') + '/ci_low']:.2f}, " in section


def test_gold_model_gives_a_reason_where_no_recipe_can_be_rerun(tmp_path):
    """A checkpoint cannot be retrained without task A, nor a tiny model whose recipe is not on
    disk: the gold model is absent with the reason (the attacks still run), never a failure."""
    import dagster as dg
    import pandas as pd

    from mlu_assets.resources import BenchmarkSettings, ComputeSettings, MLflowTracking
    from mlu_assets.robustness.attack_assets import GoldModelConfig, gold_model
    from mlu_training.models.registry import BaseModelRef

    splits = pd.DataFrame({"task": ["A", "A", "B"], "role": ["forget", "retain", "forget"],
                           "entity_id": ["Cat", "Dog", "Moon"], "split": ["train"] * 3})
    for source, path, reason in (("checkpoint", str(tmp_path), "cannot retrain it without task A"),
                                 ("tiny", str(tmp_path), "no mlu_base_model.json")):
        ref = BaseModelRef("m", path, source, "k" * 64, "d", 1, None, "1", "models:/mlu-base-model/1", "r", False)
        out = gold_model(dg.build_asset_context(partition_key="m"), GoldModelConfig(), ref, splits,
                         pd.DataFrame({"image": [], "file": []}), splits.iloc[:0], BenchmarkSettings(data_dir=str(tmp_path)),
                         MLflowTracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"), ComputeSettings())
        gold = out.value
        assert gold.path is None and gold.withheld == ["Cat"] and reason in gold.reason, gold.reason
