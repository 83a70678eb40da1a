"""MLflow, one object per (tracking URI, experiment): runs, curves, the model registry.

Only the plumbing lives here; what is logged or registered, and under which names and tags, lives
beside the domain it serves: `data/splits.py` (the benchmark's datasets), `models/registry.py`
(base models), `lumoe/registry.py` (experts), `sequences.py` (a sequence's run and metrics).
The Dagster resource `MLflowTracking` hands assets a store built from MLFLOW_TRACKING_URI.

mlflow is imported inside methods: it is slow to import and Dagster code locations load often.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

EXPERIMENT = "mlubench"


@dataclass(frozen=True)
class RegisteredVersion:
    """A version of a registered model, as the assets report it."""

    name: str
    version: str
    run_id: str
    reused: bool  # an existing version was found instead of registering a new one

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (`…/mlflow.db` → `…/artifacts`), not in ./mlruns of the cwd."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return None


def pip_requirements(*extra: str) -> list[str]:
    """Explicit: letting MLflow infer them imports torchvision, which is absent on CPU boxes."""
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in ("torch", "transformers", "tokenizers", "pillow", "pandas")] \
        + list(extra)


class MlflowStore:
    def __init__(self, tracking_uri: str, experiment: str = EXPERIMENT):
        self.tracking_uri = tracking_uri
        self.experiment = experiment

    @cached_property
    def client(self):
        """The one client of this store, for tracking and registry alike (same URI)."""
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # mlflow.start_run, log_model and models:/ URIs go through the global URIs: set them once, here.
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # -- runs ---------------------------------------------------------------------------------

    def experiment_id(self, create: bool = True) -> str | None:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        return self.client.create_experiment(self.experiment, artifact_location=artifact_root_for(self.tracking_uri))

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str]) -> Iterator:
        import mlflow

        experiment_id = self.experiment_id()
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            yield run

    def log_curves(self, run_id: str, curves: dict[str, list[float]]) -> None:
        """Per-step values (loss curves) in batches: one call per 900 points, not one per point."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(name, float(v), now, step) for name, values in curves.items() for step, v in enumerate(values)]
        for start in range(0, len(points), 900):
            self.client.log_batch(run_id, metrics=points[start:start + 900])

    def search_runs(self, tags: dict[str, str], newest_first: bool = True, max_results: int | None = None) -> list:
        """Finished runs of the experiment carrying all of `tags`."""
        experiment_id = self.experiment_id(create=False)
        if experiment_id is None:
            return []
        query = " and ".join([*(f"tags.`{k}` = '{v}'" for k, v in tags.items()), "attributes.status = 'FINISHED'"])
        order = ["attributes.start_time DESC" if newest_first else "attributes.start_time ASC"]
        kwargs = {"max_results": max_results} if max_results else {}
        return list(self.client.search_runs([experiment_id], query, order_by=order, **kwargs))

    def find_run(self, tags: dict[str, str]):
        """The newest finished run carrying all of `tags`, or None."""
        runs = self.search_runs(tags, max_results=1)
        return runs[0] if runs else None

    # -- registry -----------------------------------------------------------------------------

    def registry_versions(self, name: str) -> list:
        """Every version of a registered model (none when it does not exist yet), oldest first."""
        import mlflow

        try:
            versions = self.client.search_model_versions(f"name = '{name}'")
        except mlflow.exceptions.MlflowException:
            return []
        return sorted(versions, key=lambda v: int(v.version))

    def find_model_version(self, name: str, tags: dict[str, str]):
        """The newest registered version whose tags include all of `tags`, or None."""
        matching = [v for v in self.registry_versions(name) if all(v.tags.get(k) == str(val) for k, val in tags.items())]
        return matching[-1] if matching else None

    def aliased_versions(self, name: str) -> set[str]:
        """The versions some alias of a registered model points at (empty when it does not exist)."""
        import mlflow

        try:
            return set(self.client.get_registered_model(name).aliases.values())
        except mlflow.exceptions.MlflowException:
            return set()

    def register_pyfunc(self, name: str, code_file: str, artifacts: dict[str, str], version_tags: dict[str, str],
                        run_id: str, model_config: dict | None = None, extra_requirements: tuple[str, ...] = ()
                        ) -> RegisteredVersion:
        """Log a pyfunc "from code" in the active run and register it as a new version, created with
        its tags (a watcher of the registry never sees it untagged)."""
        import mlflow

        from .models.pyfunc import signature

        info = mlflow.pyfunc.log_model(
            name="model", python_model=code_file, artifacts=artifacts, model_config=model_config,
            signature=signature(), pip_requirements=pip_requirements(*extra_requirements))
        self.client  # noqa: B018  (the global registry URI is set)
        registered = mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in version_tags.items()})
        return RegisteredVersion(name, str(registered.version), run_id, reused=False)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]):
        """Tag a registered version; returns it as it now is."""
        for k, v in tags.items():
            self.client.set_model_version_tag(name, version, k, str(v))
        return self.client.get_model_version(name, version)

    def download(self, uri: str, dst: Path | None = None) -> Path:
        """An artifact or a `models:/` URI as a local folder (MLflow's cache when `dst` is None)."""
        import mlflow

        self.client  # noqa: B018  (models:/ URIs resolve through the global registry URI)
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst) if dst else None,
                                                        tracking_uri=self.tracking_uri))
