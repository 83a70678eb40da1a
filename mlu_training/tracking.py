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


def _pip_requirements() -> list[str]:
    """Explicit: letting MLflow infer them imports torchvision, which is absent on CPU boxes."""
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in ("torch", "transformers", "tokenizers", "pillow", "pandas")]


def _log_curves(tracking_uri: str, run_id: str, curves: dict[str, list[float]]) -> None:
    """Per-step values (loss curves) in batches: one call per 900 points, not one per point."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = [Metric(name, float(v), now, step) for name, values in curves.items() for step, v in enumerate(values)]
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for start in range(0, len(points), 900):
        client.log_batch(run_id, metrics=points[start:start + 900])


def _register_pyfunc(tracking_uri: str, registered_name: str, code_file: str, artifacts: dict[str, str],
                     version_tags: dict[str, str], model_config: dict | None = None,
                     extra_requirements: tuple[str, ...] = ()) -> str:
    """Log a pyfunc "from code" in the active run and register it as a new version, created with
    its tags (a watcher of the registry never sees it untagged)."""
    import mlflow

    from .models.pyfunc import signature

    info = mlflow.pyfunc.log_model(
        name="model", python_model=code_file, artifacts=artifacts, model_config=model_config,
        signature=signature(), pip_requirements=_pip_requirements() + list(extra_requirements))
    mlflow.set_registry_uri(tracking_uri)
    registered = mlflow.register_model(info.model_uri, registered_name,
                                       tags={k: str(v) for k, v in version_tags.items()})
    return str(registered.version)


def _registered(registered_name: str, version, run_id: str, reused: bool) -> dict:
    return {"version": str(version), "model_uri": f"models:/{registered_name}/{version}", "run_id": run_id,
            "reused": reused}


def register_checkpoint(tracking_uri: str, registered_name: str, checkpoint_dir: str, run_name: str,
                        run_tags: dict[str, str], version_tags: dict[str, str], params: dict,
                        metrics: dict[str, float], curves: dict[str, list[float]] | None = None,
                        experiment: str = EXPERIMENT, reuse_tags: dict[str, str] | None = None) -> dict:
    """Log a checkpoint as a pyfunc model in its own run, register it as a new version of
    `registered_name`, tag the version; returns version, model URI, run id and whether an existing
    version carrying all `reuse_tags` was returned instead."""
    import mlflow

    from .models import pyfunc

    existing = find_model_version(tracking_uri, registered_name, reuse_tags) if reuse_tags else None
    if existing is not None:
        return _registered(registered_name, existing.version, existing.run_id, True)
    with start_run(tracking_uri, run_name, run_tags, experiment) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        _log_curves(tracking_uri, run.info.run_id, curves or {})
        version = _register_pyfunc(tracking_uri, registered_name, pyfunc.__file__, {"checkpoint": str(checkpoint_dir)},
                                   version_tags)
        return _registered(registered_name, version, run.info.run_id, False)


def find_model_version(tracking_uri: str, registered_name: str, tags: dict[str, str]):
    """The newest registered version whose tags include all of `tags`, or None."""
    matching = [v for v in registry_versions(tracking_uri, registered_name)
                if all(v.tags.get(k) == str(val) for k, val in tags.items())]
    return matching[-1] if matching else None


def log_sequence(tracking_uri: str, result, tags: dict[str, str], artifacts_dir: Path,
                 experiment: str = EXPERIMENT, extra_metrics: dict[str, float] | None = None) -> str:
    """One MLflow run per unlearning sequence: the config as params, every X-UY metric, stability,
    ROUGE-L, paraphrase results, loss curves per task, the heatmaps and the answers."""
    import mlflow

    from .report import heatmap_png

    config = result.config
    name = f"{config.method}-{config.order}"
    with start_run(tracking_uri, name, tags, experiment) as run:
        mlflow.log_params(config.as_dict())
        mlflow.log_metrics(result.metrics() | (extra_metrics or {}))
        _log_curves(tracking_uri, run.info.run_id, {f"train/loss/U{task}": v for task, v in result.losses.items()})
        artifacts_dir = Path(artifacts_dir)
        for kind in ("forget_quality", "utility"):
            heatmap_png(result.matrix(kind), f"{config.method} {kind.replace('_', ' ')} (X-UY)",
                        artifacts_dir / f"{kind}_heatmap.png")
            mlflow.log_artifact(str(artifacts_dir / f"{kind}_heatmap.png"), "heatmaps")
        answers = artifacts_dir / "answers.jsonl"
        result.evaluations.to_json(answers, orient="records", lines=True, force_ascii=False)
        mlflow.log_artifact(str(answers), "answers")
        return run.info.run_id


def find_run(tracking_uri: str, tags: dict[str, str], experiment: str = EXPERIMENT):
    """The newest finished run of the experiment carrying all of `tags`, or None."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()) + " and attributes.status = 'FINISHED'"
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def register_expert(tracking_uri: str, registered_name: str, adapter_dir: str, base_model_uri: str, task: str,
                    alias: str, run_tags: dict[str, str], version_tags: dict[str, str], params: dict,
                    losses: list[float], experiment: str = EXPERIMENT, reuse_tags: dict[str, str] | None = None) -> dict:
    """Log an expert adapter in its own run, register it as a version of `registered_name` with its
    tags (or find the version carrying all `reuse_tags`), and point `alias` at it."""
    import mlflow
    import peft

    from .lumoe import pyfunc as expert_pyfunc

    existing = find_model_version(tracking_uri, registered_name, reuse_tags) if reuse_tags else None
    if existing is not None:
        registered = _registered(registered_name, existing.version, existing.run_id, True)
    else:
        with start_run(tracking_uri, f"lumoe-expert-{task}", run_tags, experiment) as run:
            mlflow.log_params(params)
            if losses:
                mlflow.log_metric("train_loss", sum(losses[-5:]) / len(losses[-5:]))
            _log_curves(tracking_uri, run.info.run_id, {"train/loss": losses})
            version = _register_pyfunc(tracking_uri, registered_name, expert_pyfunc.__file__,
                                       {"adapter": str(adapter_dir)}, version_tags,
                                       model_config={"base_model_uri": base_model_uri},
                                       extra_requirements=(f"peft=={peft.__version__}",))
            registered = _registered(registered_name, version, run.info.run_id, False)
    set_alias(tracking_uri, registered_name, alias, registered["version"])
    return registered


def set_alias(tracking_uri: str, registered_name: str, alias: str, version: str) -> None:
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        registered_name, alias, version)


def registered_experts(tracking_uri: str, registered_name: str, base_model: str) -> dict[str, dict]:
    """task -> {version, entities, adapter (a local folder), key, created} for every expert of base
    model `base_model` (its partition key) that an alias points at: the current one per task."""
    import json

    import mlflow

    from .models.sources import PARTITION_TAG

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # models:/ URIs resolve through the global registry URI
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        current = set(client.get_registered_model(registered_name).aliases.values())
    except mlflow.exceptions.MlflowException:
        return {}
    out = {}
    # One search brings every version's tags; only this base model's current experts are downloaded.
    for mv in registry_versions(tracking_uri, registered_name):
        if mv.version not in current or mv.tags.get(PARTITION_TAG) != base_model or "mlu.task" not in mv.tags:
            continue
        root = mlflow.artifacts.download_artifacts(f"models:/{registered_name}/{mv.version}", tracking_uri=tracking_uri)
        out[mv.tags["mlu.task"]] = {"version": str(mv.version), "entities": json.loads(mv.tags.get("mlu.entities", "[]")),
                                    "adapter": str(find_folder_with(root, "adapter_config.json")),
                                    "key": mv.tags.get("mlu.expert_key", f"v{mv.version}"),
                                    "created": mv.creation_timestamp}
    return out


def registry_versions(tracking_uri: str, registered_name: str) -> list:
    """Every version of a registered model (none when it does not exist yet), oldest first."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{registered_name}'")
    except mlflow.exceptions.MlflowException:
        return []
    return sorted(versions, key=lambda v: int(v.version))


def download_checkpoint(tracking_uri: str, registered_name: str, version: str, dest: Path) -> Path:
    """A registered version's checkpoint folder (its config.json's folder), downloaded once to `dest`."""
    import shutil

    import mlflow

    dest = Path(dest)
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mlflow.set_registry_uri(tracking_uri)
        mlflow.artifacts.download_artifacts(f"models:/{registered_name}/{version}", dst_path=str(tmp),
                                            tracking_uri=tracking_uri)
        tmp.rename(dest)  # a half-downloaded checkpoint is never found at `dest`
    return find_folder_with(dest, "config.json")


def set_version_tags(tracking_uri: str, registered_name: str, version: str, tags: dict[str, str]):
    """Tag a registered version; returns it as it now is."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, version, k, str(v))
    return client.get_model_version(registered_name, version)


def find_folder_with(root: str | Path, filename: str) -> Path:
    """The folder under a downloaded MLflow model that holds `filename` (an adapter, a checkpoint)."""
    hits = sorted(Path(root).rglob(filename), key=lambda p: len(p.parts))
    if not hits:
        raise FileNotFoundError(f"no {filename} under {root}")
    return hits[0].parent
