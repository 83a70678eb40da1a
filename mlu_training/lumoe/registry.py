"""Experts in the MLflow registry: each is a version of `mlu-lumoe-expert` (a pyfunc holding the
adapter alone, the base model referenced by its registry URI), tagged with its request, entities
and base model partition; the alias `task-<request>` (`task-<request>-on-<model>` on a base model
other than the default) points at the current expert of each request."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..mlflow_store import MlflowStore, RegisteredVersion
from ..models.sources import PARTITION_TAG
from .experts import Expert

REGISTERED_EXPERT = "mlu-lumoe-expert"


@dataclass(frozen=True)
class ExpertRef:
    """What the `lumoe_experts` asset hands on (the sequence reads experts from the registry)."""

    task: str  # the request it serves
    entities: list[str]
    path: str  # the adapter folder
    key: str
    version: str
    model_uri: str
    run_id: str
    reused: bool  # registered before (same key, same base model)
    alias: str


@dataclass(frozen=True)
class RegisteredExpert:
    """The current expert of one request on one base model, as the registry has it."""

    task: str
    version: str
    entities: list[str]
    adapter: str  # a local folder (downloaded from the registry)
    key: str
    created: int  # registration time (ms): later requests are ordered by it
    seed: str = "0"
    config_key: str = ""  # its key without the seed


def expert_alias(task: str, base_model: str, default_base_model: str) -> str:
    """The registry alias of the current expert of `task`: task-<T> on the default base model,
    task-<T>-on-<model> on any other (aliases allow letters, digits, '_' and '-')."""
    alias = f"task-{task}" if base_model == default_base_model else f"task-{task}-on-{base_model}"
    return re.sub(r"[^0-9A-Za-z_-]", "_", alias)


def register_expert(store: MlflowStore, expert: Expert, base_model, params: dict, alias: str) -> ExpertRef:
    """Log the expert's adapter in a run of its own and register it as a version of
    mlu-lumoe-expert with its tags (or find the version of the same expert on the same base
    model), then point `alias` at it. `base_model` is the BaseModelRef it was trained on."""
    import mlflow
    import peft

    from . import pyfunc as expert_pyfunc

    last = expert.losses[-5:]
    train_loss = sum(last) / len(last) if last else None  # the end of training, smoothed over 5 steps
    tags = {"mlu.task": expert.task, "mlu.entities": json.dumps(expert.entities, ensure_ascii=False),
            "mlu.base_model": base_model.key[:16], "mlu.base_model_uri": base_model.model_uri,
            PARTITION_TAG: base_model.name, "mlu.expert_key": expert.key, "mlu.seed": str(expert.seed),
            "mlu.expert_config_key": expert.config_key or expert.key,
            "mlu.train_loss": f"{train_loss:.4f}" if train_loss is not None else "n/a"}
    existing = store.find_model_version(REGISTERED_EXPERT, {"mlu.expert_key": expert.key, PARTITION_TAG: base_model.name})
    if existing is not None:  # with today's tags (its config key may be newer than the version)
        store.set_version_tags(REGISTERED_EXPERT, str(existing.version),
                               {k: v for k, v in tags.items() if existing.tags.get(k) != v})
        registered = RegisteredVersion(REGISTERED_EXPERT, str(existing.version), existing.run_id, reused=True)
    else:
        with store.start_run(f"lumoe-expert-{expert.task}", {"mlu.kind": "lumoe_expert", **tags}) as run:
            mlflow.log_params(params)
            if train_loss is not None:
                mlflow.log_metric("train_loss", train_loss)
            store.log_curves(run.info.run_id, {"train/loss": expert.losses})
            registered = store.register_pyfunc(
                REGISTERED_EXPERT, expert_pyfunc.__file__, {"adapter": str(expert.path)}, tags, run.info.run_id,
                model_config={"base_model_uri": base_model.model_uri}, extra_requirements=(f"peft=={peft.__version__}",))
    store.set_alias(REGISTERED_EXPERT, alias, registered.version)
    return ExpertRef(task=expert.task, entities=expert.entities, path=str(expert.path), key=expert.key,
                     version=registered.version, model_uri=registered.model_uri, run_id=registered.run_id,
                     reused=registered.reused, alias=alias)


def registered_experts(store: MlflowStore, base_model: str) -> dict[str, RegisteredExpert]:
    """request -> its current expert (the version an alias points at) on base model `base_model`
    (its partition key). One search brings every version's tags; only these are downloaded."""
    from ..paths import find_folder_with

    current = store.aliased_versions(REGISTERED_EXPERT)
    out = {}
    for mv in store.registry_versions(REGISTERED_EXPERT):
        if mv.version not in current or mv.tags.get(PARTITION_TAG) != base_model or "mlu.task" not in mv.tags:
            continue
        root = store.download(f"models:/{REGISTERED_EXPERT}/{mv.version}")
        out[mv.tags["mlu.task"]] = RegisteredExpert(
            task=mv.tags["mlu.task"], version=str(mv.version), entities=json.loads(mv.tags.get("mlu.entities", "[]")),
            adapter=str(find_folder_with(root, "adapter_config.json")), key=mv.tags.get("mlu.expert_key", f"v{mv.version}"),
            created=mv.creation_timestamp, seed=mv.tags.get("mlu.seed", "0"),
            config_key=mv.tags.get("mlu.expert_config_key", mv.tags.get("mlu.expert_key", f"v{mv.version}")))
    return out
