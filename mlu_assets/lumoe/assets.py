"""Group `lumoe`: one expert per unlearning request and base model (requests are a dynamic
dimension: the benchmark's tasks A-D and every request that arrives), and LUMoE's run of the
request sequence per base model, re-evaluated by itself whenever an expert is (re)registered."""

from pathlib import Path

import dagster as dg

from mlu_training.lumoe.experts import ExpertConfig

from ..metadata import sequence_output
from ..models.assets import ON_NEW_INPUTS, model_partitions
from ..resources import BenchmarkSettings, JudgeSettings, MLflowTracking, ModelSettings, RouterSettings
from ..settings import config_from_dataclass

GROUP = "lumoe"
REGISTERED_EXPERT = "mlu-lumoe-expert"
request_partitions = dg.DynamicPartitionsDefinition(name="lumoe_requests")
model_and_request = dg.MultiPartitionsDefinition({"model": model_partitions, "request": request_partitions})
ExpertTrainingConfig = config_from_dataclass("ExpertTrainingConfig", ExpertConfig,
                                             doc="How an expert is trained (mlu_training.lumoe.experts.ExpertConfig).")


def _names(entity_catalog) -> dict[str, list[str]]:
    return {r.entity_id: [r.entity, *list(r.aliases)] for r in entity_catalog.itertuples(index=False)}


@dg.asset(group_name=GROUP, partitions_def=model_and_request, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def lumoe_experts(context: dg.AssetExecutionContext, config: ExpertTrainingConfig, benchmark_splits,
                  validated_qa_pairs, raw_crawls, base_model: dict, benchmark: BenchmarkSettings,
                  models: ModelSettings, mlflow: MLflowTracking):
    """The LoRA expert of one request on one base model, trained with `po` on the unchanged base
    (never merged) and registered as a version of mlu-lumoe-expert with the alias task-<request>
    (task-<request>-on-<model> for a base model other than the default)."""
    import json

    from mlu_training.evaluation import image_loader
    from mlu_training.lumoe.experts import expert_alias, train_expert
    from mlu_training.lumoe.requests import (BENCHMARK_TASKS, RequestRejected, UnlearningRequest,
                                             accepted_request_path, request_rows)
    from mlu_training.models.sources import PARTITION_TAG
    from mlu_training.tracking import register_expert

    task = context.partition_key.keys_by_dimension["request"]
    if task in BENCHMARK_TASKS:
        train = benchmark_splits[benchmark_splits["split"] == "train"]
        rows = train[(train["task"] == task) & (train["role"] == "forget")]
    else:
        stored = accepted_request_path(benchmark.data_dir, task)
        if not stored.is_file():
            raise dg.Failure(f"request {task}: no accepted request file at {stored}")
        data = json.loads(stored.read_text())
        request = UnlearningRequest(data["id"], data["entity_ids"], tuple(data.get("qa", [])))
        crawled = set(raw_crawls["image"])
        try:
            rows = request_rows(request, validated_qa_pairs[validated_qa_pairs["image"].isin(crawled)],
                                benchmark.get_profile().max_train_images_per_entity, crawled)
        except RequestRejected as why:
            raise dg.Failure(str(why)) from None  # before anything is trained or registered
    expert = train_expert(base_model["path"], base_model["key"], task, rows, ExpertConfig(**config.model_dump()),
                          Path(benchmark.data_dir) / "experts", image_loader(raw_crawls))
    tags = {"mlu.task": task, "mlu.entities": json.dumps(expert.entities, ensure_ascii=False),
            "mlu.base_model": base_model["key"][:16], "mlu.base_model_uri": base_model["model_uri"],
            PARTITION_TAG: base_model["name"], "mlu.expert_key": expert.key,
            "mlu.train_loss": f"{sum(expert.losses[-5:]) / len(expert.losses[-5:]):.4f}"}
    alias = expert_alias(task, base_model["name"], models.default_key())
    registered = register_expert(mlflow.tracking_uri, REGISTERED_EXPERT, str(expert.path), base_model["model_uri"], task,
                                 alias, {"mlu.kind": "lumoe_expert", **tags}, tags, config.model_dump(), expert.losses,
                                 mlflow.experiment, reuse_tags={"mlu.expert_key": expert.key, PARTITION_TAG: base_model["name"]})
    value = {"task": task, "entities": expert.entities, "path": str(expert.path), "key": expert.key, **registered}
    return dg.Output(value, metadata={"entities": dg.MetadataValue.json(expert.entities), "rows": len(rows),
                                      "registered_model": registered["model_uri"], "alias": alias,
                                      "reused": expert.reused, "adapter": dg.MetadataValue.path(str(expert.path))})


@dg.asset(group_name=GROUP, partitions_def=model_partitions, deps=[lumoe_experts], kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def lumoe_sequence(context: dg.AssetExecutionContext, knowledge_filter, benchmark_splits, raw_crawls, entity_catalog,
                   base_model: dict, benchmark: BenchmarkSettings, judge: JudgeSettings, routing: RouterSettings,
                   mlflow: MLflowTracking):
    """LUMoE on one base model over the requests in order of arrival (A, B, C, D, then any later
    request): after each, its expert joins, the router is refreshed from the registry, every task
    is evaluated. Logged like the baselines (forget_quality/X-UY, utility/X-UY, stability), plus
    router quality. The same experts, items and judge read the finished sequence back."""
    import pandas as pd

    from mlu_training.data.splits import splits_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.lumoe.requests import BENCHMARK_TASKS
    from mlu_training.lumoe.sequence import (LumoeConfig, load_finished, lumoe_key, router_metrics,
                                             run_lumoe_sequence, save_finished)
    from mlu_training.tracking import find_run, log_sequence, registered_experts

    model = base_model["name"]
    experts = registered_experts(mlflow.tracking_uri, REGISTERED_EXPERT, model)
    order = [t for t in BENCHMARK_TASKS if t in experts] + sorted(
        (t for t in experts if t not in BENCHMARK_TASKS), key=lambda t: experts[t]["created"])
    if not order:
        raise dg.Failure(f"no expert registered for base model {model}: materialize lumoe_experts first")
    config = LumoeConfig(tasks=tuple(order), router=routing.backend)
    key = lumoe_key(config, base_model["key"], base_model["data_digest"], [experts[t]["key"] for t in order],
                    splits_digest(knowledge_filter), judge.describe())
    work_dir = Path(benchmark.data_dir) / "lumoe" / model / key[:16]
    tags = {"mlu.kind": "lumoe_sequence", "mlu.method": "lumoe", "mlu.order": config.order, "mlu.router": routing.backend,
            "mlu.profile": benchmark.profile, "mlu.base_model": base_model["model_uri"], "mlu.model": model,
            "mlu.sequence_key": key, "mlu.judge": judge.describe()}
    finished = load_finished(work_dir, config)
    if finished:
        result, quality = finished
        context.log.info(f"lumoe on {model}: {config.order} is up to date, read back from {work_dir}")
    else:
        load = image_loader(raw_crawls)
        train = benchmark_splits[benchmark_splits["split"] == "train"]
        classes = dict(zip(entity_catalog["entity_id"], entity_catalog["class_name"]))
        result, quality = run_lumoe_sequence(
            base_model["path"], {t: (experts[t]["adapter"], experts[t]["entities"]) for t in order},
            _names(entity_catalog), knowledge_filter, load, judge.build(benchmark.data_dir),
            routing.factory(train[["entity_id", "image"]], load, classes, benchmark.data_dir), config,
            on_step=lambda i, t, p: context.log.info(f"lumoe on {model}: request {i + 1}/{len(order)} ({t}) {p}"))
        save_finished(work_dir, result, quality)
    # The same key gives the same numbers: a run already logged for it is kept, one gone is logged again.
    previous = find_run(mlflow.tracking_uri, {"mlu.sequence_key": key, "mlu.model": model}, mlflow.experiment)
    run_id = previous.info.run_id if previous else log_sequence(
        mlflow.tracking_uri, result, tags, work_dir / "artifacts", mlflow.experiment, extra_metrics=router_metrics(quality))
    final = pd.DataFrame(quality[-1]["per_task"])
    value, metadata = sequence_output(result, run_id)
    return dg.Output(
        {**value, "tasks": order, "router": quality, "sequence_key": key},
        metadata={**metadata, "router_accuracy": quality[-1]["accuracy"], "reused": finished is not None,
                  "retain_to_expert_rate": quality[-1]["retain_to_expert_rate"],
                  "router_per_task": dg.MetadataValue.md(final.to_markdown(index=False))})
