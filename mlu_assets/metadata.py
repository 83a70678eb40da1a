"""What the UI shows of a sequence (baseline or LUMoE)."""

import dagster as dg


def sequence_metadata(summary) -> dict:
    """Both X-UY matrices, stability, missing judgements and the MLflow run of a SequenceSummary."""
    import pandas as pd

    from mlu_training.figures import markdown
    from mlu_training.sequences import describe_nothing, parse_order, stability_metric

    metrics = summary.metrics
    nothing = describe_nothing(summary.nothing_to_unlearn or {}, parse_order(summary.order))
    return {**({"nothing_to_unlearn": nothing} if nothing else {}),"forget_quality_X_UY": dg.MetadataValue.md(markdown(pd.DataFrame(summary.forget_quality))),
            "utility_X_UY": dg.MetadataValue.md(markdown(pd.DataFrame(summary.utility))),
            "stability_forget_quality": metrics.get(stability_metric("forget_quality"), float("nan")),
            "stability_utility": metrics.get(stability_metric("utility"), float("nan")),
            "judge_missing": int(metrics["judge/missing"]), "mlflow_run_id": summary.run_id,
            "steps_reused": summary.steps_reused}
