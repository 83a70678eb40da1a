"""Group `models`: the base models (registered in MLflow) and what each knows (the knowledge filter).

Every base model is a partition of the dynamic `base_models` dimension (`tiny`, a checkpoint
folder's name, or `mlu-base-model-v<N>`; see mlu_training.models.sources). A new partition is
evaluated by declarative automation: everything downstream is eager. A model must know before it
can unlearn: only evaluation items the base model answers correctly are kept for unlearning.
"""

import dagster as dg

from mlu_training.models.registry import BaseModelRef

from ..partitions import model_partitions
from ..resources import BenchmarkSettings, ComputeSettings, JudgeSettings, MLflowTracking, ModelSettings

GROUP = "models"
# Re-run when a parent changes or a new base model partition appears (parents all materialized).
ON_NEW_INPUTS = dg.AutomationCondition.eager()


class BaseModelConfig(dg.Config):
    """How the tiny default model is taught (ignored when MLU_BASE_MODEL names a checkpoint)."""

    # None: the profile's (mini 300; with the pool to decline, 150 left it declining 22 % of known
    # items, 300: 14 %); more entities need more steps for as many passes over their pairs.
    steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-3
    # Draws its initial weights, its batches and the entities it is taught to decline. Sequences on
    # base models of different seeds pool in the report (`mlu run --base-seeds 0,1`).
    seed: int = 0


class KnowledgeFilterConfig(dg.Config):
    threshold: int = 2  # minimum judge score (0-2) for an item to count as known
    batch_size: int = 32
    max_new_tokens: int = 96
    min_kept_fraction: float = 0.5  # below this, the check warns for that task side


@dg.asset(group_name=GROUP, partitions_def=model_partitions, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, benchmark_splits, raw_crawls,
               validated_qa_pairs, benchmark: BenchmarkSettings, models: ModelSettings,
               mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[BaseModelRef]:
    """One base model to unlearn from: the in-project tiny LLaVA taught every entity of the profile
    (with images) and to decline entities outside it, a checkpoint folder, or a version registered
    by someone else. Registered as a version of mlu-base-model (a registry version is adopted, not
    copied). Its calibration (how often it declines known and never-seen entities) is measured on
    held-out pictures and logged."""
    import dataclasses

    from mlu_training.data.splits import data_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.models.declining import calibration, declines_for
    from mlu_training.models.registry import provide_base_model
    from mlu_training.models.vlm import VisionLanguageModel

    compute.use_threads(shares_machine=False)  # one per base model, before anything else can run
    profile = benchmark.get_profile()
    digest = data_digest(benchmark_splits, raw_crawls)
    pool = declines_for(validated_qa_pairs, benchmark_splits, config.seed)
    try:
        ref = provide_base_model(
            models.resolve(context.partition_key), mlflow.store(), digest, profile.name,
            benchmark.path("models", "registry"),
            teach_tiny=lambda: _teach_tiny_model(context, config, benchmark_splits, raw_crawls, benchmark, digest, pool),
            tiny_params=_sft_config(config, profile).as_dict())
    except FileNotFoundError as why:  # a registered version without a checkpoint in it
        raise dg.Failure(str(why)) from None
    measured = calibration(VisionLanguageModel.load(ref.path), benchmark_splits[benchmark_splits["split"] == "eval"],
                           pool.unseen[pool.unseen["variant"] == 0], image_loader(raw_crawls))
    ref = dataclasses.replace(ref, calibration=measured)
    if ref.source != "registry":  # our run; an adopted version's run is someone else's
        mlflow.store().log_curves(ref.run_id, {f"calibration/{k}": [v] for k, v in measured.items()
                                               if not k.endswith("_items")})
    context.log.info(f"base model {ref.name}: declines {measured.get('refusal_unseen', float('nan')):.0%} of never-seen "
                     f"entities, {measured.get('refusal_known', float('nan')):.0%} of known ones")
    return dg.Output(ref, metadata={
        "calibration_refusal_unseen": measured.get("refusal_unseen", -1.0),
        "calibration_refusal_known": measured.get("refusal_known", -1.0),
        "taught_to_decline": len(pool.taught) if ref.source == "tiny" else 0,
        "seed": ref.seed if ref.seed is not None else -1,  # -1: a checkpoint, taught elsewhere
        "path": dg.MetadataValue.path(ref.path), "source": ref.source, "reused": ref.weights_reused,
        "num_parameters": ref.num_parameters, "train_loss": ref.train_loss if ref.train_loss is not None else -1.0,
        "registered_model": ref.model_uri, "mlflow_run_id": ref.run_id,
    })


def _sft_config(config: BaseModelConfig, profile):
    from mlu_training.models.sft import SFTConfig

    return SFTConfig(**{**config.model_dump(), "steps": profile.base_model_steps if config.steps is None else config.steps})


def _teach_tiny_model(context, config: BaseModelConfig, benchmark_splits, raw_crawls, benchmark: BenchmarkSettings,
                      digest: str, declines):
    """The in-project tiny LLaVA, trained (or reused: same data, same settings) with a progress bar."""
    from tqdm import tqdm

    from mlu_training.evaluation import image_loader
    from mlu_training.models.base_model import build_base_model
    from mlu_training.models.tiny_llava import TinyLlavaConfig

    profile = benchmark.get_profile()
    sft = _sft_config(config, profile)
    tiny = TinyLlavaConfig.for_pictures(profile.image_size)
    bars = []  # made at the first step: a model found on disk shows none

    def progress(step: int, loss: float) -> None:
        if not bars:
            bars.append(tqdm(total=sft.steps, desc="teaching the base model", unit="step"))
            if step:
                context.log.info(f"base model resumes at step {step + 1}/{sft.steps} (the state a stopped run saved)")
        bar = bars[0]
        bar.update(step + 1 - bar.n)
        bar.set_postfix(loss=f"{loss:.3f}")
        if step % 25 == 0 or step == sft.steps - 1:
            context.log.info(f"base model step {step + 1}/{sft.steps}: loss {loss:.4f}")

    try:
        return build_base_model(benchmark_splits, image_loader(raw_crawls), digest, benchmark.path("models"), tiny, sft,
                                progress, declines=declines)
    finally:
        for bar in bars:
            bar.close()


@dg.asset(group_name=GROUP, partitions_def=model_partitions, kinds={"pytorch"}, automation_condition=ON_NEW_INPUTS,
          check_specs=[dg.AssetCheckSpec("kept_at_least_half", asset="knowledge_filter",
                                         description="Every task side keeps at least half of its evaluation items.")])
def knowledge_filter(context: dg.AssetExecutionContext, config: KnowledgeFilterConfig, base_model: BaseModelRef,
                     benchmark_splits, raw_crawls, validated_qa_pairs, benchmark: BenchmarkSettings, judge: JudgeSettings,
                     compute: ComputeSettings):
    """The evaluation items (all phrasing variants) this base model answers correctly: judge score
    ≥ threshold. Unlearning is measured on these only. The nightly schedule re-runs it: its answers
    are read back unless the model, the items, the judge or the settings changed."""
    from mlu_training.evaluation import image_loader
    from mlu_training.models.knowledge import filter_known_once
    from mlu_training.models.vlm import VisionLanguageModel
    from mlu_training.sequences import describe_nothing, nothing_to_unlearn

    compute.use_threads(shares_machine=False)
    items = benchmark_splits[benchmark_splits["split"] == "eval"]
    known, read_back = filter_known_once(
        benchmark.path("knowledge"), base_model.key, base_model.data_digest, judge.describe(),
        lambda: VisionLanguageModel.load(base_model.path), items, image_loader(raw_crawls),
        judge.build(benchmark.data_dir, validated_qa_pairs), config.threshold, config.batch_size, config.max_new_tokens)
    kept, table = known.kept, known.table
    context.log.info(f"knowledge filter of {context.partition_key} keeps {len(kept)}/{len(table)} evaluation items"
                     + (" (its answers read back: the same model, items, judge and settings)" if read_back else ""))
    tasks = sorted(table["task"].unique())
    nothing = describe_nothing(nothing_to_unlearn(kept, tasks), tasks)
    if nothing:  # a model that knows none of a task's items is an outcome: the sequences record it
        context.log.warning(f"knowledge filter of {context.partition_key}: {nothing}")
    yield dg.Output(kept, metadata={
        **({"nothing_to_unlearn": nothing} if nothing else {}),
        "dagster/row_count": len(kept), "num_rows": len(kept), "num_items": len(table),
        "kept_fraction": round(len(kept) / max(1, len(table)), 3), "judge": judge.describe(), "read_back": read_back,
        "kept_per_task": dg.MetadataValue.md(known.per_task.to_markdown(index=False)),
        "kept_per_variant": dg.MetadataValue.md(known.per_variant.to_markdown(index=False)),
        "dropped_examples": dg.MetadataValue.md(
            table[~table["kept"]].head(8)[["entity", "question", "answer", "base_response", "judge_reason"]]
            .to_markdown(index=False)),
    })
    low = known.low_sides(config.min_kept_fraction)
    yield dg.AssetCheckResult(
        check_name="kept_at_least_half", passed=not low, severity=dg.AssetCheckSeverity.WARN,
        description="every task side keeps enough" if not low else
        "few known items in " + ", ".join(f"{t}-{r} ({f:.0%})" for t, r, f in low),
        metadata={"kept_per_task": dg.MetadataValue.md(known.per_task.to_markdown(index=False))},
    )
