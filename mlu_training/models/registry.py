"""Base models in the MLflow registry: each base model partition is a version of
`mlu-base-model`, registered by mlu (the tiny LLaVA, a checkpoint folder) or adopted (a version
someone else registered), and tagged with its partition so that a watcher never takes it for new.

`provide_base_model` is the whole of what the `base_model` asset does, as a plain function.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..mlflow_store import MlflowStore, RegisteredVersion
from .sources import PARTITION_TAG, REGISTERED_BASE, ModelSource

if typing.TYPE_CHECKING:  # base_model imports torch; this module is read when Dagster loads
    from .base_model import BaseModel


@dataclass(frozen=True)
class BaseModelRef:
    """What the `base_model` asset hands downstream: where the weights are and what they are."""

    name: str  # the partition key
    path: str  # the local checkpoint folder
    source: str  # "tiny" | "checkpoint" | "registry"
    key: str  # recipe key (tiny) or folder signature: what the weights depend on
    data_digest: str  # the profile's splits it was built or evaluated for
    num_parameters: int
    train_loss: float | None
    version: str  # its version of mlu-base-model
    model_uri: str  # models:/mlu-base-model/<version>
    run_id: str
    reused: bool  # registered before with the same recipe (or adopted)
    weights_reused: bool = False  # the weights were found on disk, not trained
    calibration: dict | None = None  # how often it declines known / never-seen entities (declining.calibration)
    seed: int | None = None  # the seed a tiny model was taught with; None for a checkpoint
    config_key: str = ""  # `key` with the seed left out (a checkpoint: its key)

    @property
    def seedless_key(self) -> str:
        """What base models that differ only by their seed share: runs on them are pooled."""
        return self.config_key or self.key


def provide_base_model(source: ModelSource, store: MlflowStore, data_digest: str, profile_name: str,
                       download_dir: Path, teach_tiny: Callable[[], "BaseModel"], tiny_params: dict) -> BaseModelRef:
    """The weights of one base model partition, registered (or adopted) as a version of
    mlu-base-model. `teach_tiny()` builds (or finds) the in-project model; it is called only for
    the `tiny` source. `tiny_params` are the tiny model's training settings, logged as params."""
    from .base_model import checkpoint_base_model

    if source.kind == "registry":
        model, registered = adopt_registered(store, source.key, source.version, Path(download_dir) / f"v{source.version}")
    else:
        model = checkpoint_base_model(str(source.path)) if source.kind == "checkpoint" else teach_tiny()
        registered = register_base_model(store, model, source.key, profile_name, data_digest,
                                         tiny_params if model.source == "tiny" else {})
    return BaseModelRef(name=source.key, path=str(model.path), source=source.kind, key=model.key,
                        data_digest=data_digest, num_parameters=model.num_parameters, train_loss=model.final_loss,
                        version=registered.version, model_uri=registered.model_uri, run_id=registered.run_id,
                        reused=registered.reused, weights_reused=model.reused, seed=model.seed,
                        config_key=model.config_key)


def register_base_model(store: MlflowStore, model: "BaseModel", partition: str, profile_name: str, data_digest: str,
                        params: dict, extra_tags: dict[str, str] | None = None) -> RegisteredVersion:
    """The checkpoint as a pyfunc in a run of its own and a new version of mlu-base-model, or the
    version already registered for the same recipe and partition. `extra_tags` (the gold model's
    role) are on the version from its creation."""
    from . import pyfunc

    existing = store.find_model_version(REGISTERED_BASE, {"mlu.recipe_key": model.key, PARTITION_TAG: partition})
    if existing is not None:
        return RegisteredVersion(REGISTERED_BASE, str(existing.version), existing.run_id, reused=True)
    import mlflow

    tags = {"mlu.profile": profile_name, "mlu.data_digest": data_digest, "mlu.recipe_key": model.key,
            "mlu.source": model.source, "mlu.num_parameters": str(model.num_parameters), PARTITION_TAG: partition,
            **(extra_tags or {})}
    loss = f"{model.final_loss:.4f}" if model.final_loss is not None else "n/a"
    with store.start_run(f"base_model-{partition}-{profile_name}", {"mlu.kind": "base_model", **tags}) as run:
        mlflow.log_params({"source": model.source, **params})
        mlflow.log_metrics({k: v for k, v in {"train_loss": model.final_loss,
                                               "num_parameters": model.num_parameters}.items() if v is not None})
        store.log_curves(run.info.run_id, {"train/loss": model.train_losses})
        return store.register_pyfunc(REGISTERED_BASE, pyfunc.__file__, {"checkpoint": str(model.path)},
                                     {**tags, "mlu.train_loss": loss}, run.info.run_id)


def adopt_registered(store: MlflowStore, partition: str, version: str, dest: Path) -> tuple["BaseModel", RegisteredVersion]:
    """A version someone else registered: its checkpoint downloaded once, the version tagged with
    its partition (so it is never taken for a new one again), nothing copied."""
    from .base_model import checkpoint_base_model

    try:
        local = download_checkpoint(store, version, dest)
    except FileNotFoundError as why:
        raise FileNotFoundError(f"{REGISTERED_BASE} version {version} holds no transformers checkpoint: {why}") from None
    model = checkpoint_base_model(str(local))
    tagged = store.set_version_tags(REGISTERED_BASE, version, {PARTITION_TAG: partition, "mlu.recipe_key": model.key})
    return model, RegisteredVersion(REGISTERED_BASE, str(version), tagged.run_id or "", reused=True)


def download_checkpoint(store: MlflowStore, version: str, dest: Path) -> Path:
    """A registered version's checkpoint folder (its config.json's folder), downloaded once to `dest`."""
    import shutil

    from ..paths import find_folder_with

    dest = Path(dest)
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        store.download(f"models:/{REGISTERED_BASE}/{version}", tmp)
        tmp.rename(dest)  # a half-downloaded checkpoint is never found at `dest`
    return find_folder_with(dest, "config.json")

