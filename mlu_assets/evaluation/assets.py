"""Group `evaluation`: the report people look at, built from the sequences' MLflow runs."""

import dagster as dg

from mlu_training.report import Report

from ..lumoe.assets import lumoe_sequence
from ..resources import BenchmarkSettings, MLflowTracking
from ..unlearning.assets import unlearning_sequence

GROUP = "evaluation"


@dg.asset(group_name=GROUP, deps=[unlearning_sequence, lumoe_sequence, dg.AssetKey("router_audit")], kinds={"mlflow", "html"},
          automation_condition=dg.AutomationCondition.eager())
def report(benchmark: BenchmarkSettings, mlflow: MLflowTracking) -> dg.Output[Report]:
    """A leaderboard (final forget quality, final utility, stability, LUMoE's router precision and
    recall), the X-UY heatmaps and degradation curves: PNGs, one self-contained HTML file, and an
    MLflow run carrying them."""
    import base64

    from mlu_training.report import for_display, judges_note, publish_report

    from ..metadata import code_version, release_digest

    provenance = {"release": release_digest(benchmark.data_dir), "code": code_version()}
    built = publish_report(mlflow.store(), benchmark.profile, benchmark.path("report"), provenance)
    if built is None:
        raise dg.Failure("no finished sequence in MLflow for this profile: materialize unlearning_sequence or lumoe_sequence first")
    value, board, figures = built
    curves = "\n\n".join(f"![{p.stem}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"
                         for p in figures[:2])
    return dg.Output(value, metadata={
        "leaderboard": dg.MetadataValue.md(for_display(board).to_markdown(index=False)),
        "degradation_curves": dg.MetadataValue.md(curves), "html": dg.MetadataValue.path(value.html),
        "methods": len(board), "mlflow_run_id": value.mlflow_run_id,
        **{k: v for k, v in value.provenance.items()}, "judges_differ": judges_note(board) or "no"})
