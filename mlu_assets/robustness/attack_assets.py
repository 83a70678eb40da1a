"""Group `robustness`, the attacks (issue #15, parts 2-3): per base model, a gold model that never
saw task A's forget entities; per base model × method, the attacks on the sequence's final model
(relearning, int8/int4, LUMoE's bypass), membership inference and the comparison with the gold
model, one MLflow run each. Eager after the sequences; `attacks` serves the baselines' partitions,
`lumoe_attacks` LUMoE's (the same evaluation, the final model assembled from its experts)."""

import dagster as dg

from mlu_training.models.registry import BaseModelRef
from mlu_training.robustness.attacks import AttackConfig
from mlu_training.robustness.gold import GoldModelRef
from mlu_training.sequences import SequenceSummary

from ..models.assets import ON_NEW_INPUTS
from ..partitions import method_and_model, model_partitions
from ..resources import BenchmarkSettings, ComputeSettings, JudgeSettings, MLflowTracking, RouterSettings
from ..settings import config_from_dataclass, dataclass_from_config

GROUP = "robustness"

AttacksConfig = config_from_dataclass(
    "AttacksConfig", AttackConfig, exclude=("version",),
    doc="How the final models are attacked (mlu_training.robustness.attacks.AttackConfig), editable in the Launchpad.")


class GoldModelConfig(dg.Config):
    task: str = "A"  # whose forget entities the gold model never sees (the attacks' task)


@dg.asset(group_name=GROUP, partitions_def=model_partitions, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def gold_model(context: dg.AssetExecutionContext, config: GoldModelConfig, base_model: BaseModelRef, benchmark_splits,
               raw_crawls, validated_qa_pairs, benchmark: BenchmarkSettings,
               mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[GoldModelRef]:
    """The base model's recipe trained without one task's forget entities (what perfect unlearning
    would leave), registered as a version of mlu-base-model tagged mlu.role=gold, reused while its
    inputs are unchanged. Only mlu's tiny model has a recipe to rerun: for a checkpoint, no gold."""
    from mlu_training.evaluation import image_loader
    from mlu_training.robustness.gold import build_gold_model, register_gold, withheld_entities

    compute.use_threads(shares_machine=False)  # one per base model, like the base model itself
    withheld = sorted(withheld_entities(benchmark_splits, config.task))

    def none(reason: str) -> dg.Output[GoldModelRef]:  # the attacks still run, without the gold metrics
        context.log.warning(f"no gold model: {reason}")
        return dg.Output(GoldModelRef(base_model.name, config.task, withheld, reason=reason), metadata={"reason": reason})

    if base_model.source != "tiny":
        return none(f"{base_model.name} is a {base_model.source} model: mlu cannot retrain it without task {config.task}")
    try:
        model = build_gold_model(base_model.path, base_model.key, benchmark_splits, validated_qa_pairs,
                                 image_loader(raw_crawls), base_model.data_digest, benchmark.path("models"), config.task,
                                 progress=lambda step, loss: step % 50 or context.log.info(f"gold model step {step + 1}: loss {loss:.4f}"))
    except ValueError as why:  # a base model made by an older recipe: rematerialize base_model first
        return none(str(why))
    registered = register_gold(mlflow.store(), model, base_model.name, benchmark.profile, base_model.data_digest,
                               config.task)
    ref = GoldModelRef(base_model.name, config.task, withheld, str(model.path), model.key, registered.version,
                       registered.model_uri, registered.reused)
    return dg.Output(ref, metadata={"withheld": dg.MetadataValue.json(withheld), "registered_model": ref.model_uri,
                                    "reused": model.reused, "path": dg.MetadataValue.path(ref.path)})


@dg.asset(group_name=GROUP, partitions_def=method_and_model, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def attacks(context: dg.AssetExecutionContext, config: AttacksConfig, unlearning_sequence: SequenceSummary,
            gold_model: GoldModelRef, knowledge_filter, benchmark_splits, raw_crawls, validated_qa_pairs,
            base_model: BaseModelRef, benchmark: BenchmarkSettings, judge: JudgeSettings,
            mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[dict]:
    """A baseline's final model (its sequence's last checkpoint) attacked: `attack/<attack>/
    <forget_quality|forget_correctness>` and `mia/<score>/auc`, each with its interval,
    `gold/ks_forget_quality`, `gold/privleak`; one MLflow run."""
    from mlu_training.lifelong import final_model_path, sequence_dir
    from mlu_training.robustness.attacks import FinalModel

    compute.use_threads(shares_machine=True)  # one per method: the queue runs them side by side
    method = context.partition_key.keys_by_dimension["method"]
    work_dir = sequence_dir(benchmark.data_dir, method, unlearning_sequence.sequence_key)
    final = FinalModel(str(final_model_path(work_dir, unlearning_sequence.order) or base_model.path))
    return _evaluate(context, method, unlearning_sequence, lambda *_: final, config, gold_model, knowledge_filter,
                     benchmark_splits, raw_crawls, validated_qa_pairs, base_model, benchmark, judge, mlflow)


@dg.asset(group_name=GROUP, partitions_def=model_partitions, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def lumoe_attacks(context: dg.AssetExecutionContext, config: AttacksConfig, lumoe_sequence: SequenceSummary,
                  gold_model: GoldModelRef, knowledge_filter, benchmark_splits, raw_crawls, validated_qa_pairs,
                  entity_catalog, base_model: BaseModelRef, benchmark: BenchmarkSettings, judge: JudgeSettings,
                  routing: RouterSettings, mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[dict]:
    """LUMoE's final model attacked as it is served: the untouched base model with every expert of
    the sequence, each query's expert chosen once by its router (calibrated as LUMoE's sequence
    calibrates it). Adds `attack/bypass/…` (the base model alone: what anyone holding the weights reads)."""
    from mlu_training.data.catalog import entity_names
    from mlu_training.lumoe.registry import registered_experts
    from mlu_training.models.base_model import declines_of
    from mlu_training.models.vlm import VisionLanguageModel
    from mlu_training.robustness.attacks import FinalModel, routes_of
    from mlu_training.router.base import Registry
    from mlu_training.sequences import parse_order

    compute.use_threads(shares_machine=False)  # one per base model

    def assemble(load_image, queries) -> FinalModel:
        experts = registered_experts(mlflow.store(), base_model.name)
        order = parse_order(lumoe_sequence.order)
        train = benchmark_splits[benchmark_splits["split"] == "train"]
        classes = dict(zip(entity_catalog["entity_id"], entity_catalog["class_name"]))
        distractors = declines_of(base_model.path, validated_qa_pairs, benchmark_splits).distractor_images()
        router = routing.factory(train[["entity_id", "image"]], load_image, classes, benchmark.data_dir, distractors)(
            VisionLanguageModel.load(base_model.path), Registry({t: experts[t].entities for t in order},
                                                                entity_names(entity_catalog)))
        return FinalModel(base_model.path, {t: experts[t].adapter for t in order}, routes_of(router, queries, load_image))

    return _evaluate(context, "lumoe", lumoe_sequence, assemble, config, gold_model, knowledge_filter, benchmark_splits,
                     raw_crawls, validated_qa_pairs, base_model, benchmark, judge, mlflow, router=routing.backend)


def _evaluate(context, method: str, sequence: SequenceSummary, assemble, config, gold_model: GoldModelRef,
              knowledge_filter, benchmark_splits, raw_crawls, validated_qa_pairs, base_model: BaseModelRef,
              benchmark: BenchmarkSettings, judge: JudgeSettings, mlflow: MLflowTracking,
              router: str | None = None) -> dg.Output[dict]:
    """One evaluation: the final model `assemble(load_image, queries)` gives (queries: every item it
    will be asked, for LUMoE's router), attacked, or the run of the same key read back."""
    import pandas as pd

    from mlu_training.data.splits import splits_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.models.base_model import declines_of
    from mlu_training.robustness.attacks import (FinalModel, attacked_items, evaluate_robustness, robustness_key,
                                                 robustness_tags, logged_robustness)
    from mlu_training.robustness.mia import membership_sets

    cfg = dataclass_from_config(AttackConfig, config.model_dump())
    key = robustness_key(cfg, sequence.sequence_key, gold_model.key, splits_digest(knowledge_filter), judge.describe())
    tags = robustness_tags(method, sequence.order, benchmark.profile, base_model, sequence.sequence_key, sequence.run_id,
                           judge.describe(), key, gold_model.model_uri)
    if router:
        tags["mlu.router"] = router
    if sequence.run_id:  # the part the sequence was confined to (`ga [projector]` is a row of its own)
        run = mlflow.store().find_run({"mlu.sequence_key": sequence.sequence_key, "mlu.model": base_model.name})
        if run is not None and "mlu.targets" in run.data.tags:
            tags["mlu.targets"] = run.data.tags["mlu.targets"]
    load = image_loader(raw_crawls)
    train = benchmark_splits[benchmark_splits["split"] == "train"]
    # The base model's own pool: its `unseen` entities are the ones it was never taught.
    unseen = declines_of(base_model.path, validated_qa_pairs, benchmark_splits).unseen

    def evaluate():
        members, nonmembers = membership_sets(train, unseen, cfg.task)
        final = assemble(load, pd.concat([attacked_items(knowledge_filter, cfg.task), members, nonmembers]))
        gold = FinalModel(gold_model.path) if gold_model.path else None
        return evaluate_robustness(final, train, knowledge_filter, unseen, validated_qa_pairs, load,
                                   judge.build(benchmark.data_dir, validated_qa_pairs), cfg, gold,
                                   on_stage=lambda s: context.log.info(f"robustness of {method} on {base_model.name}: {s}"))

    run_id, metrics, reused = logged_robustness(
        mlflow.store(), tags, cfg.params(), evaluate,
        benchmark.path("robustness", method, base_model.name, key[:16]))
    if reused:
        context.log.info(f"robustness of {method} on {base_model.name} is up to date: run {run_id}")
    return dg.Output(metrics, metadata={"mlflow_run_id": run_id, "reused": reused,
                                        "metrics": dg.MetadataValue.md(pd.Series(metrics).rename("value").to_markdown()),
                                        **({"gold_model": gold_model.model_uri} if gold_model.model_uri else
                                           {"no_gold_model": gold_model.reason or ""})})
