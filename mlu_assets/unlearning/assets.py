"""Group `unlearning`: the baseline methods, each run over the whole task sequence (A→B→C→D by
default) on a backbone that every step modifies. One partition per registered method and base
model; a new base model's sequences run by themselves (eager)."""

from pathlib import Path

import dagster as dg

from mlu_training.lifelong import UnlearningConfig
from mlu_training.methods import METHODS

from ..metadata import sequence_output
from ..models.assets import ON_NEW_INPUTS, model_partitions
from ..resources import BenchmarkSettings, JudgeSettings, MLflowTracking
from ..settings import config_from_dataclass

GROUP = "unlearning"
method_partitions = dg.StaticPartitionsDefinition(list(METHODS))
method_and_model = dg.MultiPartitionsDefinition({"method": method_partitions, "model": model_partitions})


UnlearningSequenceConfig = config_from_dataclass(
    "UnlearningSequenceConfig", UnlearningConfig, exclude=("method",),
    doc="The sequence's settings (mlu_training.lifelong.UnlearningConfig), editable in the Launchpad.")


# A crashed attempt is retried once and resumes from its last finished step.
@dg.asset(group_name=GROUP, partitions_def=method_and_model, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS, retry_policy=dg.RetryPolicy(max_retries=1))
def unlearning_sequence(context: dg.AssetExecutionContext, config: UnlearningSequenceConfig, knowledge_filter,
                        benchmark_splits, raw_crawls, base_model: dict, benchmark: BenchmarkSettings,
                        judge: JudgeSettings, mlflow: MLflowTracking):
    """One baseline method over the task sequence on one base model: after each task, every
    task's forget quality and utility (X-UY) on the items the base model knows. One MLflow run."""
    from mlu_training.data.splits import splits_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.lifelong import run_sequence, sequence_key
    from mlu_training.tracking import find_run, log_sequence

    method = context.partition_key.keys_by_dimension["method"]
    cfg = UnlearningConfig(method=method, **config.model_dump())
    key = sequence_key(cfg, base_model["key"], base_model["data_digest"], splits_digest(knowledge_filter),
                       judge.describe())
    work_dir = Path(benchmark.data_dir) / "sequences" / method / key[:16]

    def progress(index: int, task: str, phase: str) -> None:
        context.log.info(f"{method} on {base_model['name']}, {cfg.order}: "
                         f"step {index + 1}/{len(cfg.order)} (task {task}) {phase}")

    result = run_sequence(base_model["path"], benchmark_splits[benchmark_splits["split"] == "train"], knowledge_filter,
                          image_loader(raw_crawls), judge.build(benchmark.data_dir), cfg, work_dir, progress)
    tags = {"mlu.kind": "unlearning_sequence", "mlu.method": method, "mlu.order": cfg.order,
            "mlu.profile": benchmark.profile, "mlu.base_model": base_model["model_uri"], "mlu.model": base_model["name"],
            "mlu.sequence_key": key, "mlu.judge": judge.describe()}
    # Identical weights under two names share the work, but each base model gets its own run.
    previous = find_run(mlflow.tracking_uri, {"mlu.sequence_key": key, "mlu.model": base_model["name"]}, mlflow.experiment)
    run_id = previous.info.run_id if previous and result.resumed_from == len(cfg.order) else \
        log_sequence(mlflow.tracking_uri, result, tags, work_dir / "artifacts", mlflow.experiment)
    value, metadata = sequence_output(result, run_id)
    return dg.Output({**value, "sequence_key": key}, metadata={
        **metadata, "steps_reused": result.resumed_from, "work_dir": dg.MetadataValue.path(str(work_dir))})
