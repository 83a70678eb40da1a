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


def code_version() -> str:
    """What code made a result: `git describe --always --dirty` of the checkout, or the installed
    package's version where the project is not a git checkout."""
    import subprocess
    from importlib import metadata

    from mlu_training.paths import PROJECT_ROOT

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"mlu {metadata.version('mlu')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def release_digest(data_dir) -> str:
    """The digest of the release the tables were built from (the stored mlubench_release)."""
    import json
    from pathlib import Path

    stored = Path(data_dir) / "tables" / "mlubench_release.json"
    try:
        return json.loads(stored.read_text())["digest"]
    except (OSError, ValueError, KeyError):
        return "unknown"
