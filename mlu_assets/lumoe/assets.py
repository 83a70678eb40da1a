"""Group `lumoe`: one expert per unlearning request and base model (requests are a dynamic
dimension: the benchmark's tasks A-D and every request that arrives), and LUMoE's run of the
request sequence per base model, re-evaluated by itself whenever an expert is (re)registered."""

import dagster as dg

from mlu_training.lumoe.experts import ExpertConfig
from mlu_training.lumoe.registry import ExpertRef
from mlu_training.models.registry import BaseModelRef
from mlu_training.sequences import SequenceSummary

from ..metadata import sequence_metadata
from ..models.assets import ON_NEW_INPUTS
from ..partitions import model_and_request, model_partitions
from ..resources import BenchmarkSettings, ComputeSettings, JudgeSettings, MLflowTracking, ModelSettings, RouterSettings
from ..settings import config_from_dataclass, dataclass_from_config

GROUP = "lumoe"
ExpertTrainingConfig = config_from_dataclass("ExpertTrainingConfig", ExpertConfig,
                                             doc="How an expert is trained (mlu_training.lumoe.experts.ExpertConfig).")


class LumoeSequenceConfig(dg.Config):
    """Which order the requests are replayed in."""

    order: str = ""  # e.g. CABD (the paper's code also ran C→A→B→D); empty: the order they arrived in


@dg.asset(group_name=GROUP, partitions_def=model_and_request, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def lumoe_experts(context: dg.AssetExecutionContext, config: ExpertTrainingConfig, benchmark_splits,
                  validated_qa_pairs, raw_crawls, base_model: BaseModelRef, benchmark: BenchmarkSettings,
                  models: ModelSettings, mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[ExpertRef]:
    """The LoRA expert of one request on one base model, trained with `po` on the unchanged base
    (never merged) and registered as a version of mlu-lumoe-expert with the alias task-<request>
    (task-<request>-on-<model> for a base model other than the default)."""
    from mlu_training.evaluation import image_loader
    from mlu_training.lumoe.experts import train_expert
    from mlu_training.lumoe.registry import expert_alias, register_expert
    from mlu_training.lumoe.requests import RequestRejected, forget_rows

    threads = compute.use_threads(shares_machine=True)  # the experts train side by side
    request = context.partition_key.keys_by_dimension["request"]
    try:
        rows = forget_rows(request, benchmark_splits, validated_qa_pairs, raw_crawls, benchmark.data_dir,
                           benchmark.get_profile().max_train_images_per_entity)
    except RequestRejected as why:
        raise dg.Failure(str(why)) from None  # before anything is trained or registered
    cfg = dataclass_from_config(ExpertConfig, config.model_dump())
    expert = train_expert(base_model.path, base_model.key, request, rows, cfg, benchmark.path("experts"),
                          image_loader(raw_crawls), base_model.seedless_key)
    ref = register_expert(mlflow.store(), expert, base_model, cfg.params(),
                          expert_alias(request, base_model.name, models.default_key()))
    return dg.Output(ref, metadata={"entities": dg.MetadataValue.json(ref.entities), "rows": len(rows),
                                    "registered_model": ref.model_uri, "alias": ref.alias,
                                    "reused": expert.reused, "adapter": dg.MetadataValue.path(ref.path),
                                    "torch_threads": threads})


@dg.asset(group_name=GROUP, partitions_def=model_partitions, deps=[lumoe_experts], kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def lumoe_sequence(context: dg.AssetExecutionContext, config: LumoeSequenceConfig, knowledge_filter, benchmark_splits,
                   raw_crawls, entity_catalog, validated_qa_pairs,
                   base_model: BaseModelRef, benchmark: BenchmarkSettings, judge: JudgeSettings, routing: RouterSettings,
                   mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[SequenceSummary]:
    """LUMoE on one base model over the requests in order of arrival (A, B, C, D, then any later
    request): after each, its expert joins, the router is refreshed from the registry, every task
    is evaluated. Logged like the baselines (forget_quality/X-UY, utility/X-UY, stability), plus
    router quality. The same experts, items and judge read the finished sequence back."""
    import pandas as pd

    from mlu_training.data.catalog import entity_names
    from mlu_training.data.splits import splits_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.lumoe.registry import registered_experts
    from mlu_training.lumoe.sequence import LumoeConfig, lumoe_key, request_order, router_metrics, run_or_read_lumoe
    from mlu_training.models.base_model import declines_of
    from mlu_training.models.knowledge import seedless_items_key
    from mlu_training.sequences import logged_run, parse_order, sequence_tags

    compute.use_threads(shares_machine=False)  # one per base model, after every expert
    store = mlflow.store()
    experts = registered_experts(store, base_model.name)
    order = parse_order(config.order) if config.order else request_order(experts)
    if not order:
        raise dg.Failure(f"no expert registered for base model {base_model.name}: materialize lumoe_experts first")
    if sorted(set(order)) != sorted(order) or set(order) - set(experts):
        raise dg.Failure(f"order {config.order!r}: each request once, of those with an expert on {base_model.name} "
                         f"({', '.join(request_order(experts))})")
    lumoe = LumoeConfig(tasks=tuple(order), router=routing.backend)
    # The router is calibrated on these: a checkpoint's key (its folder) does not cover them.
    distractors = declines_of(base_model.path, validated_qa_pairs, benchmark_splits).distractor_images()
    key = lumoe_key(lumoe, base_model.key, base_model.data_digest, [experts[t].key for t in order],
                    splits_digest(knowledge_filter), judge.describe(), distractors)
    seeds = sorted({experts[t].seed for t in order})  # the experts' seeds: one, unless requests were trained apart
    work_dir = benchmark.path("lumoe", base_model.name, key[:16])
    load = image_loader(raw_crawls)
    train = benchmark_splits[benchmark_splits["split"] == "train"]
    classes = dict(zip(entity_catalog["entity_id"], entity_catalog["class_name"]))
    result, quality, reused = run_or_read_lumoe(
        work_dir, base_model.path, experts, entity_names(entity_catalog), knowledge_filter, load,
        judge.build(benchmark.data_dir, validated_qa_pairs),
        routing.factory(train[["entity_id", "image"]], load, classes, benchmark.data_dir,
                        distractors),
        lumoe, on_step=lambda i, t, p: context.log.info(f"lumoe on {base_model.name}: request {i + 1}/{len(order)} ({t}) {p}"))
    if reused:
        context.log.info(f"lumoe on {base_model.name}: {lumoe.order} is up to date, read back from {work_dir}")
    # Pooled with other seeds' runs, the experts' and the base model's: what its seed draws (the
    # kept items, the distractors) is left out of the config key with it.
    config_key = lumoe_key(lumoe, base_model.seedless_key, base_model.data_digest, [experts[t].config_key for t in order],
                           seedless_items_key(knowledge_filter), judge.describe())
    tags = sequence_tags("lumoe_sequence", "lumoe", lumoe.order, benchmark.profile, base_model, key, judge.describe(),
                         seed=",".join(seeds), config_key=config_key,
                         **{"mlu.router": routing.backend})
    run_id = logged_run(store, result, tags, work_dir / "artifacts", extra_metrics=router_metrics(quality))
    summary = SequenceSummary.of(result, run_id, key, router=quality)
    final = pd.DataFrame(quality[-1]["per_task"])
    return dg.Output(summary, metadata={
        **sequence_metadata(summary), "router_accuracy": quality[-1]["accuracy"], "reused": reused,
        "retain_to_expert_rate": quality[-1]["retain_to_expert_rate"],
        "router_per_task": dg.MetadataValue.md(final.to_markdown(index=False))})
