"""Group `evaluation`: the report people look at, built from the sequences' MLflow runs."""

from pathlib import Path

import dagster as dg

from ..lumoe.assets import lumoe_sequence
from ..resources import BenchmarkSettings, MLflowTracking
from ..unlearning.assets import unlearning_sequence

GROUP = "evaluation"


@dg.asset(group_name=GROUP, deps=[unlearning_sequence, lumoe_sequence], kinds={"mlflow", "html"},
          automation_condition=dg.AutomationCondition.eager())
def report(context: dg.AssetExecutionContext, benchmark: BenchmarkSettings, mlflow: MLflowTracking):
    """A leaderboard (final forget quality, final utility, stability, LUMoE's router precision and
    recall), the X-UY heatmaps and degradation curves: PNGs, one self-contained HTML file, and an
    MLflow run carrying them."""
    import base64

    import mlflow as mlflow_lib

    from mlu_training.report import build_report, collect_runs
    from mlu_training.tracking import start_run

    runs = collect_runs(mlflow.tracking_uri, mlflow.experiment, benchmark.profile)
    if not runs:
        raise dg.Failure("no finished sequence in MLflow for this profile: materialize unlearning_sequence or lumoe_sequence first")
    built = build_report(runs, Path(benchmark.data_dir) / "report")
    with start_run(mlflow.tracking_uri, f"report-{benchmark.profile}", {"mlu.kind": "report", "mlu.profile": benchmark.profile},
                   mlflow.experiment) as run:
        mlflow_lib.log_artifact(str(built["html"]), "report")
        for figure in built["figures"]:
            mlflow_lib.log_artifact(str(figure), "report/figures")
    curves = "\n\n".join(f"![{p.stem}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"
                         for p in built["figures"][:2])
    board = built["leaderboard"]
    return dg.Output(
        {"html": str(built["html"]), "leaderboard": board.to_dict("records"), "mlflow_run_id": run.info.run_id},
        metadata={"leaderboard": dg.MetadataValue.md(board.to_markdown(index=False, floatfmt=".2f")),
                  "degradation_curves": dg.MetadataValue.md(curves),
                  "html": dg.MetadataValue.path(str(built["html"])), "methods": len(runs),
                  "mlflow_run_id": run.info.run_id})
