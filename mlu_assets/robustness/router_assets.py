"""LUMoE's router audit per base model (issue 15, part 1): the confusion matrix of routes,
over-refusal, and the evasion probes with the real and the oracle router."""

import dagster as dg

from mlu_training.models.registry import BaseModelRef
from mlu_training.robustness.probes import BACKDROP, PROBES
from mlu_training.robustness.router_audit import AuditConfig, AuditSummary
from mlu_training.sequences import SequenceSummary

from ..models.assets import ON_NEW_INPUTS
from ..partitions import model_partitions
from ..resources import BenchmarkSettings, ComputeSettings, JudgeSettings, MLflowTracking, RouterSettings
from ..settings import config_from_dataclass
from . import GROUP

RouterAuditConfig = config_from_dataclass(
    "RouterAuditConfig", AuditConfig, exclude=("version",), probes=(list[str], list(PROBES)),
    doc="Which probes the router audit runs and how it generates (mlu_training.robustness.router_audit.AuditConfig).")


@dg.asset(group_name=GROUP, partitions_def=model_partitions, kinds={"pytorch", "mlflow"},
          automation_condition=ON_NEW_INPUTS)
def router_audit(context: dg.AssetExecutionContext, config: RouterAuditConfig, lumoe_sequence: SequenceSummary,
                 knowledge_filter, benchmark_splits, raw_crawls, entity_catalog, validated_qa_pairs, base_model: BaseModelRef,
                 benchmark: BenchmarkSettings, judge: JudgeSettings, routing: RouterSettings,
                 mlflow: MLflowTracking, compute: ComputeSettings) -> dg.Output[AuditSummary]:
    """With every request's expert registered: where the router sends each evaluation item (a
    confusion matrix), how many items that should be answered get an expert or a refusal
    (over_refusal/<retain|retain_named|distractor|unseen>), and per evasion probe (probes.PROBES:
    image changes, another backdrop, "Unlike X" prefixes, the entity named on a blank picture,
    another name, paraphrases) the router's recall and forget quality with the real vs the oracle
    router. One MLflow run."""
    from mlu_training.data.catalog import entity_names
    from mlu_training.evaluation import image_loader
    from mlu_training.lumoe.registry import registered_experts
    from mlu_training.lumoe.sequence import request_order
    from mlu_training.models.base_model import declines_of
    from mlu_training.models.declining import AUDITED
    from mlu_training.robustness.router_audit import (audit_key, audit_metrics, audit_tags, confusion, load_audit,
                                                      log_audit, run_router_audit, save_audit)

    store = mlflow.store()
    experts = registered_experts(store, base_model.name)
    order = request_order(experts)
    pool = declines_of(base_model.path, validated_qa_pairs, benchmark_splits)
    pictured = set(raw_crawls["image"])  # every image of the release, unless a test's world is smaller
    # The halves the router was not calibrated on.
    unseen = pool.unseen_half(AUDITED)
    unseen = unseen[unseen["image"].isin(pictured)]
    audited_distractors = pool.known_half(AUDITED)
    audited_distractors = audited_distractors[audited_distractors["image"].isin(pictured)]
    distractors = [p for p in pool.distractor_images() if p in pictured]
    probes = tuple(config.probes)
    if BACKDROP in probes and (raw_crawls["source"] != "synthetic").any():  # it redraws the synthetic render
        context.log.info(f"router audit: probe {BACKDROP!r} left out, the crawls hold pictures mlu did not render")
        probes = tuple(p for p in probes if p != BACKDROP)
    audit = AuditConfig(**{**config.model_dump(), "probes": probes})
    key = audit_key(audit, lumoe_sequence.sequence_key, routing.backend,
                    [*unseen["qa_id"].astype(str), *audited_distractors["qa_id"].astype(str)])
    work_dir = benchmark.path("robustness", "router_audit", base_model.name, key[:16])
    table = load_audit(work_dir)
    reused = table is not None
    if table is None:
        compute.use_threads(shares_machine=False)  # one per base model, after LUMoE's sequence
        load = image_loader(raw_crawls)
        train = benchmark_splits[benchmark_splits["split"] == "train"]
        classes = dict(zip(entity_catalog["entity_id"], entity_catalog["class_name"]))
        table = run_router_audit(
            base_model.path, {t: (experts[t].adapter, experts[t].entities) for t in order}, entity_names(entity_catalog),
            knowledge_filter, unseen, load, judge.build(benchmark.data_dir, validated_qa_pairs),
            routing.factory(train[["entity_id", "image"]], load, classes, benchmark.data_dir, distractors),
            audit, audited_distractors, benchmark.get_profile().seed)
        save_audit(work_dir, table)
    tags = audit_tags(benchmark.profile, base_model, lumoe_sequence.sequence_key, key, judge.describe(), routing.backend)
    run_id = log_audit(store, table, tags, audit, work_dir / "artifacts")
    metrics = audit_metrics(table)
    context.log.info(f"router audit on {base_model.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                                                                        if k.startswith("router/")))
    return dg.Output(AuditSummary(run_id, key, metrics), metadata={
        "confusion": dg.MetadataValue.md(confusion(table).to_markdown()), "reused": reused, "mlflow_run_id": run_id,
        **{k.replace("/", "_"): v for k, v in metrics.items()}})
