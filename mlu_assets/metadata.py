"""What the UI shows of a sequence (baseline or LUMoE): the value stored and its metadata."""

import dagster as dg


def sequence_output(result, run_id: str) -> tuple[dict, dict]:
    """(value, metadata) of a finished sequence: both X-UY matrices, the metrics, stability."""
    from mlu_training.report import markdown

    fq, ut = result.matrix("forget_quality"), result.matrix("utility")
    metrics = result.metrics()
    value = {"method": result.config.method, "order": result.config.order, "run_id": run_id,
             "forget_quality": fq.to_dict(), "utility": ut.to_dict(), "metrics": metrics}
    metadata = {"forget_quality_X_UY": dg.MetadataValue.md(markdown(fq)),
                "utility_X_UY": dg.MetadataValue.md(markdown(ut)),
                "stability_forget_quality": metrics["stability/forget_quality"],
                "stability_utility": metrics["stability/utility"],
                "judge_missing": int(metrics["judge/missing"]), "mlflow_run_id": run_id}
    return value, metadata
