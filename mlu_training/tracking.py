"""MLflow tracking and registry helpers (experiment `mlubench`, see DESIGN.md "Tracking contract").

mlflow is imported inside functions: it is slow to import and Dagster code locations load often.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

EXPERIMENT = "mlubench"


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (`…/mlflow.db` → `…/artifacts`), not in ./mlruns of the cwd."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return None


def ensure_experiment(tracking_uri: str, name: str = EXPERIMENT) -> str:
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root_for(tracking_uri))


@contextmanager
def start_run(tracking_uri: str, run_name: str, tags: dict[str, str], experiment: str = EXPERIMENT) -> Iterator:
    import mlflow

    experiment_id = ensure_experiment(tracking_uri, experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        yield run


def log_benchmark_splits(tracking_uri: str, splits, profile: dict, digest: str, release_digest: str,
                         experiment: str = EXPERIMENT) -> str:
    """One run that records the profile's train and eval sets as MLflow datasets; returns its id."""
    import mlflow

    tags = {"mlu.kind": "benchmark_splits", "mlu.profile": profile["name"], "mlu.data_digest": digest}
    with start_run(tracking_uri, f"benchmark_splits-{profile['name']}", tags, experiment) as run:
        mlflow.log_params({f"profile.{k}": v for k, v in profile.items()} | {"release_digest": release_digest})
        for split in ("train", "eval"):
            part = splits[splits["split"] == split].reset_index(drop=True)
            dataset = mlflow.data.from_pandas(part, name=f"mlubench-{profile['name']}-{split}",
                                              digest=f"{digest[:8]}-{split}")
            mlflow.log_input(dataset, context=split)
            mlflow.log_metric(f"rows/{split}", len(part))
        return run.info.run_id
