"""What the UI shows of a sequence (baseline or LUMoE)."""

import dagster as dg


def sequence_metadata(summary) -> dict:
    """Both X-UY matrices, stability, missing judgements and the MLflow run of a SequenceSummary."""
    import pandas as pd

    from mlu_training.figures import markdown
    from mlu_training.sequences import stability_metric

    metrics = summary.metrics
    return {"forget_quality_X_UY": dg.MetadataValue.md(markdown(pd.DataFrame(summary.forget_quality))),
            "utility_X_UY": dg.MetadataValue.md(markdown(pd.DataFrame(summary.utility))),
            "stability_forget_quality": metrics[stability_metric("forget_quality")],
            "stability_utility": metrics[stability_metric("utility")],
            "judge_missing": int(metrics["judge/missing"]), "mlflow_run_id": summary.run_id,
            "steps_reused": summary.steps_reused}
