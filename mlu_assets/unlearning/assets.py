"""Group `unlearning`: the baseline methods, each run over the whole task sequence (A→B→C→D by
default) on a backbone that every step modifies. One partition per registered method and base
model; a new base model's sequences run by themselves (eager)."""

import dagster as dg

from mlu_training.lifelong import UnlearningConfig
from mlu_training.models.registry import BaseModelRef
from mlu_training.sequences import SequenceSummary

from ..metadata import sequence_metadata
from ..models.assets import ON_NEW_INPUTS
from ..partitions import method_and_model
from ..resources import BenchmarkSettings, ComputeSettings, JudgeSettings, MLflowTracking
from ..settings import config_from_dataclass, dataclass_from_config

GROUP = "unlearning"

UnlearningSequenceConfig = config_from_dataclass(
    "UnlearningSequenceConfig", UnlearningConfig, exclude=("method",),
    doc="The sequence's settings (mlu_training.lifelong.UnlearningConfig), editable in the Launchpad. "
        "method_args are per method, e.g. {'npo': {'beta': 0.2}}; each method's own are in methods/<name>.py.",
    method_args=(dict[str, dict[str, float]], {}))


# A crashed attempt is retried once and resumes from its last finished step.
@dg.asset(group_name=GROUP, partitions_def=method_and_model, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS, retry_policy=dg.RetryPolicy(max_retries=1))
def unlearning_sequence(context: dg.AssetExecutionContext, config: UnlearningSequenceConfig, knowledge_filter,
                        benchmark_splits, raw_crawls, validated_qa_pairs, base_model: BaseModelRef, benchmark: BenchmarkSettings,
                        judge: JudgeSettings, mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[SequenceSummary]:
    """One baseline method over the task sequence on one base model: after each task, every
    task's forget quality and utility (X-UY) on the items the base model knows. One MLflow run."""
    from mlu_training.data.splits import splits_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.lifelong import run_sequence, sequence_dir, sequence_key
    from mlu_training.models.knowledge import seedless_items_key
    from mlu_training.sequences import logged_run, sequence_tags

    threads = compute.use_threads(shares_machine=True)  # the baselines run side by side
    method = context.partition_key.keys_by_dimension["method"]
    values = config.model_dump()
    cfg = dataclass_from_config(UnlearningConfig, values, method=method, method_args=values["method_args"].get(method, {}))
    inputs = (cfg, base_model.key, base_model.data_digest, splits_digest(knowledge_filter), judge.describe())
    key = sequence_key(*inputs)
    work_dir = sequence_dir(benchmark.data_dir, method, key)

    def progress(index: int, task: str, phase: str) -> None:
        context.log.info(f"{method} on {base_model.name}, {cfg.order}: step {index + 1}/{len(cfg.order)} (task {task}) {phase}")

    result = run_sequence(base_model.path, benchmark_splits[benchmark_splits["split"] == "train"], knowledge_filter,
                          image_loader(raw_crawls), judge.build(benchmark.data_dir, validated_qa_pairs), cfg, work_dir, progress)
    # Pooled with the runs of other seeds, its own and its base model's (whose kept items differ:
    # the knowledge filter's settings stand for them).
    config_key = sequence_key(cfg, base_model.seedless_key, base_model.data_digest, seedless_items_key(knowledge_filter),
                              judge.describe(), ignore_seed=True)
    tags = sequence_tags("unlearning_sequence", method, cfg.order, benchmark.profile, base_model, key, judge.describe(),
                         seed=cfg.training.seed, config_key=config_key,
                         **{"mlu.targets": cfg.training.targets, "mlu.reference": cfg.reference})
    summary = SequenceSummary.of(result, logged_run(mlflow.store(), result, tags, work_dir / "artifacts"), key)
    return dg.Output(summary, metadata={**sequence_metadata(summary), "work_dir": dg.MetadataValue.path(str(work_dir)),
                                        "torch_threads": threads})
