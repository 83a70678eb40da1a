"""Experts: a LoRA adapter per request, trained with `po` on the *unchanged* base model and
never merged; saved as a peft adapter (a few MB), not as a model."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

EXPERT_INFO = "mlu_expert.json"


@dataclass(frozen=True)
class ExpertConfig:
    method: str = "po"
    steps: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    projector_lr: float = 1e-3
    vision_lr: float = 1e-4
    beta: float = 0.1
    retain_weight: float = 1.0
    refusal_weight: float = 1.0
    lora_rank: int = 32  # the paper's rank and alpha
    lora_alpha: int = 32
    targets: str = "language"
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Expert:
    task: str  # the request it serves: a task letter or a request id
    path: Path  # the saved adapter
    entities: list[str]
    losses: list[float]
    key: str
    reused: bool = False


def expert_alias(task: str, base_model: str, default_base_model: str) -> str:
    """The registry alias of the current expert of `task`: task-<T> on the default base model,
    task-<T>-on-<model> on any other (aliases allow letters, digits, '_' and '-')."""
    alias = f"task-{task}" if base_model == default_base_model else f"task-{task}-on-{base_model}"
    return re.sub(r"[^0-9A-Za-z_-]", "_", alias)


def expert_key(task: str, forget_rows: pd.DataFrame, config: ExpertConfig, base_model_key: str) -> str:
    content = sorted(zip(forget_rows["qa_id"], forget_rows["answer"]))
    return hashlib.sha256(json.dumps([task, content, config.as_dict(), base_model_key], sort_keys=True).encode()).hexdigest()


def train_expert(base_model_path: str, base_model_key: str, task: str, forget_rows: pd.DataFrame,
                 config: ExpertConfig, experts_dir: Path, load_image) -> Expert:
    """Train (or find already trained) the expert of `task` on its forget rows, with images."""
    from ..adapters import train_adapter
    from ..methods import get_method
    from ..models.vlm import VisionLanguageModel, seed_everything, torch_threads

    if forget_rows.empty:
        raise ValueError(f"expert {task}: no forget rows to learn from")
    entities = sorted(forget_rows["entity_id"].unique())
    key = expert_key(task, forget_rows, config, base_model_key)
    out = Path(experts_dir) / f"{task}-{key[:12]}"
    if (out / EXPERT_INFO).is_file():
        info = json.loads((out / EXPERT_INFO).read_text())
        return Expert(task, out, info["entities"], info["losses"], key, reused=True)
    torch_threads()
    seed_everything(config.seed)
    vlm = VisionLanguageModel.load(base_model_path)
    method = get_method(config.method, beta=config.beta, retain_weight=config.retain_weight,
                        refusal_weight=config.refusal_weight)
    rows = forget_rows.assign(task=task, role="forget")
    model, losses = train_adapter(vlm, method, rows, task, config, config.seed, load_image)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # the adapter only
    (tmp / EXPERT_INFO).write_text(json.dumps({"task": task, "entities": entities, "losses": losses, "key": key,
                                               "config": config.as_dict(), "base_model_key": base_model_key}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return Expert(task, out, entities, losses, key)
