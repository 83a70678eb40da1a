"""Experts: a LoRA adapter per request, trained with `po` on the *unchanged* base model and
never merged; saved as a peft adapter (a few MB), not as a model."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..adapters import AdapterTraining, without_training_seed
from ..benchmark import FORGET

EXPERT_INFO = "mlu_expert.json"


@dataclass(frozen=True)
class ExpertConfig:
    """How an expert is trained: a method (`po`, the paper's) and the shared adapter training,
    with more steps and a higher rate than a baseline's step (an expert starts from nothing)."""

    method: str = "po"
    training: AdapterTraining = AdapterTraining(steps=30, lr=1e-3)
    method_args: dict[str, float] = field(default_factory=dict)  # the method's own (methods/<name>.py Args)

    def as_dict(self) -> dict:
        """Everything an expert depends on: the method's arguments with its defaults filled in."""
        from ..methods import resolved_settings

        return resolved_settings(self)

    def params(self) -> dict:
        """The same, flat, as MLflow params."""
        flat = self.as_dict()
        return {"method": self.method, **flat["training"], **flat["method_args"]}


@dataclass
class Expert:
    task: str  # the request it serves: a task letter or a request id
    path: Path  # the saved adapter
    entities: list[str]
    losses: list[float]
    key: str
    reused: bool = False
    seed: int = 0
    config_key: str = ""  # the key without the seed: experts of one configuration trained with other seeds share it


def expert_key(task: str, forget_rows: pd.DataFrame, config: ExpertConfig, base_model_key: str,
               ignore_seed: bool = False) -> str:
    """What a trained expert depends on. With `ignore_seed` (and the base model's seedless key):
    what experts trained with other seeds, theirs or their base model's, share."""
    content = sorted(zip(forget_rows["qa_id"], forget_rows["answer"]))
    settings = without_training_seed(config.as_dict()) if ignore_seed else config.as_dict()
    return hashlib.sha256(json.dumps([task, content, settings, base_model_key], sort_keys=True).encode()).hexdigest()


def train_expert(base_model_path: str, base_model_key: str, task: str, forget_rows: pd.DataFrame,
                 config: ExpertConfig, experts_dir: Path, load_image, base_model_seedless_key: str = "") -> Expert:
    """Train (or find already trained) the expert of `task` on its forget rows, with images.
    `base_model_seedless_key`: the base model's key without its seed (BaseModelRef.seedless_key),
    for the expert's config key; default `base_model_key`."""
    from ..adapters import train_adapter
    from ..methods import get_method
    from ..models.vlm import VisionLanguageModel, seed_everything

    if forget_rows.empty:
        raise ValueError(f"expert {task}: no forget rows to learn from")
    entities = sorted(forget_rows["entity_id"].unique())
    key = expert_key(task, forget_rows, config, base_model_key)
    same_but_seed = {"seed": config.training.seed,
                     "config_key": expert_key(task, forget_rows, config, base_model_seedless_key or base_model_key,
                                              ignore_seed=True)}
    out = Path(experts_dir) / f"{task}-{key[:12]}"
    if (out / EXPERT_INFO).is_file():
        info = json.loads((out / EXPERT_INFO).read_text())
        return Expert(task, out, info["entities"], info["losses"], key, reused=True, **same_but_seed)
    seed_everything(config.training.seed)
    vlm = VisionLanguageModel.load(base_model_path)
    method = get_method(config.method, config.method_args)
    rows = forget_rows.assign(task=task, role=FORGET)
    model, losses = train_adapter(vlm, method, rows, task, config.training, config.training.seed, load_image)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # the adapter only
    (tmp / EXPERT_INFO).write_text(json.dumps({"task": task, "entities": entities, "losses": losses, "key": key,
                                               "config": config.as_dict(), "base_model_key": base_model_key}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return Expert(task, out, entities, losses, key, **same_but_seed)
