"""Group `models`: the base models (registered in MLflow) and what each knows (the knowledge filter).

Every base model is a partition of the dynamic `base_models` dimension (`tiny`, a checkpoint
folder's name, or `mlu-base-model-v<N>`; see mlu_training.models.sources). A new partition is
evaluated by declarative automation: everything downstream is eager. A model must know before it
can unlearn: only evaluation items the base model answers correctly are kept for unlearning.
"""

from pathlib import Path

import dagster as dg

from mlu_training.models.sources import REGISTERED_BASE

from ..resources import BenchmarkSettings, JudgeSettings, MLflowTracking, ModelSettings

GROUP = "models"
model_partitions = dg.DynamicPartitionsDefinition(name="base_models")
# Re-run when a parent changes or a new base model partition appears (parents all materialized).
ON_NEW_INPUTS = dg.AutomationCondition.eager()


class BaseModelConfig(dg.Config):
    """How the tiny default model is taught (ignored when MLU_BASE_MODEL names a checkpoint)."""

    steps: int = 150
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0


class KnowledgeFilterConfig(dg.Config):
    threshold: int = 2  # minimum judge score (0-2) for an item to count as known
    batch_size: int = 32
    max_new_tokens: int = 96
    min_kept_fraction: float = 0.5  # below this, the check warns for that task side


@dg.asset(group_name=GROUP, partitions_def=model_partitions, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, benchmark_splits, raw_crawls,
               benchmark: BenchmarkSettings, models: ModelSettings, mlflow: MLflowTracking):
    """One base model to unlearn from: the in-project tiny LLaVA taught every entity of the profile
    (with images), a checkpoint folder, or a version registered by someone else. Registered as a
    version of mlu-base-model (a registry version is adopted, not copied)."""
    from mlu_training.data.splits import splits_digest
    from mlu_training.models.base_model import checkpoint_base_model
    from mlu_training.models.sources import PARTITION_TAG
    from mlu_training.tracking import download_checkpoint, register_checkpoint, set_version_tags

    key = context.partition_key
    source = models.resolve(key)
    profile = benchmark.get_profile()
    digest = splits_digest(benchmark_splits)
    if source.kind == "registry":
        try:
            local = download_checkpoint(mlflow.tracking_uri, REGISTERED_BASE, source.version,
                                        Path(benchmark.data_dir) / "models" / "registry" / f"v{source.version}")
        except FileNotFoundError as why:
            raise dg.Failure(f"{REGISTERED_BASE} version {source.version} holds no transformers checkpoint: {why}") from None
        model = checkpoint_base_model(str(local))
        version = set_version_tags(mlflow.tracking_uri, REGISTERED_BASE, source.version,
                                   {PARTITION_TAG: key, "mlu.recipe_key": model.key})
        registered = {"version": source.version, "model_uri": f"models:/{REGISTERED_BASE}/{source.version}",
                      "run_id": version.run_id or "", "reused": True}
    else:
        model = checkpoint_base_model(str(source.path)) if source.kind == "checkpoint" else \
            _teach_tiny_model(context, config, benchmark_splits, raw_crawls, benchmark, digest)
        tags = {"mlu.profile": profile.name, "mlu.data_digest": digest, "mlu.recipe_key": model.key,
                "mlu.source": model.source, "mlu.num_parameters": str(model.num_parameters), PARTITION_TAG: key}
        registered = register_checkpoint(
            mlflow.tracking_uri, REGISTERED_BASE, str(model.path), run_name=f"base_model-{key}-{profile.name}",
            run_tags={"mlu.kind": "base_model", **tags},
            version_tags={**tags, "mlu.train_loss": f"{model.final_loss:.4f}" if model.final_loss is not None else "n/a"},
            params={"source": model.source, **({"steps": config.steps, "batch_size": config.batch_size, "lr": config.lr,
                                                "seed": config.seed} if model.source == "tiny" else {})},
            metrics={"train_loss": model.final_loss, "num_parameters": model.num_parameters},
            curves={"train/loss": model.train_losses}, experiment=mlflow.experiment,
            reuse_tags={"mlu.recipe_key": model.key, PARTITION_TAG: key})
    value = {"name": key, "path": str(model.path), "source": source.kind, "key": model.key, "data_digest": digest,
             "num_parameters": model.num_parameters, "train_loss": model.final_loss, **registered}
    return dg.Output(value, metadata={
        "path": dg.MetadataValue.path(str(model.path)), "source": source.kind, "reused": model.reused,
        "num_parameters": model.num_parameters, "train_loss": model.final_loss if model.final_loss is not None else -1.0,
        "registered_model": registered["model_uri"],
        "mlflow_run_id": registered["run_id"],
    })


def _teach_tiny_model(context, config: BaseModelConfig, benchmark_splits, raw_crawls, benchmark: BenchmarkSettings,
                      digest: str):
    """The in-project tiny LLaVA, trained (or reused: same data, same settings) with a progress bar."""
    from tqdm import tqdm

    from mlu_training.evaluation import image_loader
    from mlu_training.models.base_model import build_base_model
    from mlu_training.models.sft import SFTConfig
    from mlu_training.models.tiny_llava import TinyLlavaConfig

    profile = benchmark.get_profile()
    sft = SFTConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed)
    tiny = TinyLlavaConfig(image_size=profile.image_size, patch_size=max(1, profile.image_size // 4))
    bar = tqdm(total=sft.steps, desc="teaching the base model", unit="step")

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if step % 25 == 0 or step == sft.steps - 1:
            context.log.info(f"base model step {step + 1}/{sft.steps}: loss {loss:.4f}")

    try:
        return build_base_model(benchmark_splits, image_loader(raw_crawls), digest, Path(benchmark.data_dir) / "models",
                                tiny, sft, progress)
    finally:
        bar.close()


@dg.asset(group_name=GROUP, partitions_def=model_partitions, kinds={"pytorch"}, automation_condition=ON_NEW_INPUTS,
          check_specs=[dg.AssetCheckSpec("kept_at_least_half", asset="knowledge_filter",
                                         description="Every task side keeps at least half of its evaluation items.")])
def knowledge_filter(context: dg.AssetExecutionContext, config: KnowledgeFilterConfig, base_model: dict,
                     benchmark_splits, raw_crawls, benchmark: BenchmarkSettings, judge: JudgeSettings):
    """The evaluation items (all phrasing variants) this base model answers correctly: judge score
    ≥ threshold. Unlearning is measured on these only. The nightly schedule re-runs it."""
    import pandas as pd

    from mlu_training.evaluation import answer, image_loader
    from mlu_training.evaluation import judge as judge_answers
    from mlu_training.judge import RETAIN
    from mlu_training.models.vlm import VisionLanguageModel, torch_threads

    torch_threads()
    items = benchmark_splits[benchmark_splits["split"] == "eval"]
    vlm = VisionLanguageModel.load(base_model["path"])
    responses = answer(vlm, items, image_loader(raw_crawls), config.batch_size, config.max_new_tokens)
    judged = judge_answers(judge.build(benchmark.data_dir), RETAIN, items, responses)
    table = items.assign(base_response=responses, base_score=judged["score"], judge_reason=judged["judge_reason"])
    table["kept"] = table["base_score"].fillna(-1).astype(int) >= config.threshold
    summary = (table.groupby(["task", "role"])
               .agg(items=("qa_id", "size"), kept=("kept", "sum"), missing=("base_score", lambda s: int(s.isna().sum())))
               .reset_index())
    summary["kept_fraction"] = (summary["kept"] / summary["items"]).round(3)
    by_variant = table.groupby("variant")["kept"].mean().round(3).rename("kept_fraction").reset_index()
    kept = table[table["kept"]].drop(columns=["kept"]).reset_index(drop=True)
    context.log.info(f"knowledge filter of {context.partition_key} keeps {len(kept)}/{len(table)} evaluation items")
    yield dg.Output(kept, metadata={
        "dagster/row_count": len(kept), "num_rows": len(kept), "num_items": len(table),
        "kept_fraction": round(len(kept) / max(1, len(table)), 3), "judge": judge.describe(),
        "kept_per_task": dg.MetadataValue.md(summary.to_markdown(index=False)),
        "kept_per_variant": dg.MetadataValue.md(by_variant.to_markdown(index=False)),
        "dropped_examples": dg.MetadataValue.md(
            table[~table["kept"]].head(8)[["entity", "question", "answer", "base_response", "judge_reason"]]
            .to_markdown(index=False)),
    })
    low = summary[summary["kept_fraction"] < config.min_kept_fraction]
    yield dg.AssetCheckResult(
        check_name="kept_at_least_half", passed=low.empty, severity=dg.AssetCheckSeverity.WARN,
        description="every task side keeps enough" if low.empty else
        "few known items in " + ", ".join(f"{t}-{r} ({f:.0%})" for t, r, f in low[["task", "role", "kept_fraction"]].itertuples(index=False)),
        metadata={"kept_per_task": dg.MetadataValue.md(summary.to_markdown(index=False))},
    )
