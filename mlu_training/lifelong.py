"""The lifelong protocol for the baselines: unlearn task after task, each on the backbone the
previous one left behind, and evaluate every task after every step.

Step t: a fresh LoRA adapter is trained on task t's forget train set (and, for methods that use
it, its retain train set), merged into the backbone (baselines modify the backbone: that is the
point), checkpointed, and the model is asked every evaluation item of every task. X-UY is task X
evaluated after unlearning task Y. A finished step is never redone: after a crash, the sequence
resumes from the last finished step's checkpoint and gives the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .adapters import AdapterTraining, without_training_seed
from .benchmark import DEFAULT_ORDER
from .sequences import SequenceResult, nothing_to_unlearn

DONE = "DONE"
NOTHING = "NOTHING_TO_UNLEARN"  # in a step's folder: its task had nothing to unlearn (the reason inside)


@dataclass(frozen=True)
class UnlearningConfig:
    method: str
    order: str = DEFAULT_ORDER  # any permutation of the tasks, e.g. CABD
    training: AdapterTraining = AdapterTraining()
    method_args: dict[str, float] = field(default_factory=dict)  # the method's own (methods/<name>.py Args)
    # The frozen reference of KL, NPO and PO: "previous" (the model before this step, the paper's
    # code and ours by default: each request is a preference against what the model now is, and
    # it costs no second copy) or "original" (the base model before the first request: drift is
    # measured from where the sequence started; a second copy of the model in memory).
    reference: str = "previous"
    max_new_tokens: int = 64
    eval_batch_size: int = 32

    def as_dict(self) -> dict:
        """Everything a result depends on: the method's arguments with its defaults filled in."""
        from .methods import resolved_settings

        return resolved_settings(self)

    def params(self) -> dict:
        """The same, flat, as MLflow params (a method's argument named after itself: `beta`)."""
        flat = self.as_dict()
        return {**{k: v for k, v in flat.items() if k not in ("training", "method_args")}, **flat["training"],
                **flat["method_args"]}

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.order)

    def validate(self, tasks: set[str]) -> None:
        if self.reference not in ("previous", "original"):
            raise ValueError(f"reference {self.reference!r}: choose previous or original")
        if sorted(self.order) != sorted(set(self.order)) or not set(self.order) <= tasks:
            raise ValueError(f"order {self.order!r}: a permutation of tasks {''.join(sorted(tasks))} is needed")


def sequence_key(config: UnlearningConfig, base_model_key: str, data_digest: str, eval_digest: str, judge: str,
                 ignore_seed: bool = False) -> str:
    """What a finished sequence depends on: a step is reused only when all of it is unchanged (so a
    finished seed is reused, and another seed is a sequence of its own). With `ignore_seed`: what
    runs with different seeds share, the key the report pools seeds by (the config key)."""
    settings = without_training_seed(config.as_dict()) if ignore_seed else config.as_dict()
    return hashlib.sha256(json.dumps([settings, base_model_key, data_digest, eval_digest, judge],
                                     sort_keys=True).encode()).hexdigest()


def sequence_dir(data_dir: str | Path, method: str, key: str) -> Path:
    """Where a baseline's sequence of key `key` keeps its steps (under MLU_DATA_DIR)."""
    return Path(data_dir) / "sequences" / method / key[:16]


def _step_dir(work_dir: Path, index: int, task: str) -> Path:
    return work_dir / f"step-{index}-{task}"


def run_sequence(base_model_path: str, train_items: pd.DataFrame, eval_items: pd.DataFrame, load_image,
                 judge, config: UnlearningConfig, work_dir: Path,
                 on_step: Callable[[int, str, str], None] | None = None) -> SequenceResult:
    """Run (or resume) the sequence; `on_step(index, task, phase)` reports progress."""
    from .adapters import train_adapter
    from .evaluation import evaluate_all
    from .methods import get_method
    from .models.vlm import VisionLanguageModel, seed_everything

    config.validate(set(train_items["task"]) | set(eval_items["task"]))
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    method = get_method(config.method, config.method_args)
    if config.reference == "original":
        method.original = VisionLanguageModel.load(base_model_path).model.eval().requires_grad_(False)

    finished = 0  # steps already done by an earlier, interrupted run
    while finished < len(config.order) and (_step_dir(work_dir, finished, config.order[finished]) / DONE).is_file():
        finished += 1
    resumed_from = finished
    # A task whose forget items the base model knows none of has nothing to unlearn: its step trains
    # nothing (the backbone stays as it was) and is recorded with the reason; a model that knows
    # nothing at all is never even loaded.
    nothing = nothing_to_unlearn(eval_items, config.order)
    vlm = None

    def backbone():
        nonlocal vlm
        if vlm is None:
            vlm = VisionLanguageModel.load(_latest_checkpoint(work_dir, config.order, finished) or base_model_path)
        return vlm

    for index in range(finished, len(config.order)):
        task = config.order[index]
        step_dir = _step_dir(work_dir, index, task)
        shutil.rmtree(step_dir, ignore_errors=True)  # a crashed attempt of this step starts over
        step_dir.mkdir(parents=True)
        step_seed = config.training.seed * 1000 + index
        seed_everything(step_seed)
        losses: list[float] = []
        if task in nothing:
            if on_step:
                on_step(index, task, nothing[task])
        else:
            if on_step:
                on_step(index, task, "train")
            adapted, losses = train_adapter(backbone(), method, train_items, task, config.training, step_seed, load_image)
            vlm.model = adapted.merge_and_unload()  # the backbone now carries this task's update
        if on_step:
            on_step(index, task, "evaluate")
        evaluation = evaluate_all(backbone() if len(eval_items) else None, eval_items, load_image, judge, config)
        evaluation.insert(0, "unlearned", task)
        evaluation.insert(1, "step", index)
        if vlm is not None:
            vlm.save(step_dir / "model")
        evaluation.to_parquet(step_dir / "evaluation.parquet", index=False)
        (step_dir / "losses.json").write_text(json.dumps(losses))
        if task in nothing:
            (step_dir / NOTHING).write_text(nothing[task])
        (step_dir / DONE).write_text("")
        if index > 0 and vlm is not None:  # only the newest checkpoint is needed to resume
            shutil.rmtree(_step_dir(work_dir, index - 1, config.order[index - 1]) / "model", ignore_errors=True)
        finished = index + 1
        if on_step:
            on_step(index, task, "done")
    return load_sequence(work_dir, config, resumed_from)


def _latest_checkpoint(work_dir: Path, order: str, finished: int) -> Path | None:
    """The newest finished step's model (None: no step changed the base model yet)."""
    for index in range(finished - 1, -1, -1):
        model = _step_dir(work_dir, index, order[index]) / "model"
        if model.is_dir():
            return model
    return None


def final_model_path(work_dir: Path, order: str) -> Path | None:
    """The model a finished sequence ends with: its newest checkpoint (None: no step changed the
    base model, which then is the final model)."""
    return _latest_checkpoint(Path(work_dir), order, len(order))


def load_sequence(work_dir: Path, config: UnlearningConfig, resumed_from: int = 0) -> SequenceResult:
    frames, losses = [], {}
    for index, task in enumerate(config.order):
        step_dir = _step_dir(Path(work_dir), index, task)
        frames.append(pd.read_parquet(step_dir / "evaluation.parquet"))
        losses[task] = json.loads((step_dir / "losses.json").read_text())
    return SequenceResult(config, pd.concat(frames, ignore_index=True), losses, resumed_from)
