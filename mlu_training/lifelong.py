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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .judge import FORGET, RETAIN
from .metrics import score_ratio

DONE = "DONE"


@dataclass(frozen=True)
class UnlearningConfig:
    method: str
    order: str = "ABCD"
    steps: int = 20  # optimisation steps per task
    batch_size: int = 8
    lr: float = 3e-4  # language-model LoRA (the tiny model; GA at this rate collapses gradually, as in the paper)
    projector_lr: float = 1e-3
    vision_lr: float = 1e-4
    beta: float = 0.1  # npo, po
    retain_weight: float = 1.0  # gd, kl
    refusal_weight: float = 1.0  # po: weight of the refusal's NLL beside DPO
    lora_rank: int = 32
    lora_alpha: int = 32
    targets: str = "language"  # language | projector | vision_tower | vision | both
    seed: int = 0
    max_new_tokens: int = 64
    eval_batch_size: int = 32

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.order)

    def validate(self, tasks: set[str]) -> None:
        if sorted(self.order) != sorted(set(self.order)) or not set(self.order) <= tasks:
            raise ValueError(f"order {self.order!r}: a permutation of tasks {''.join(sorted(tasks))} is needed")


@dataclass
class SequenceResult:
    config: UnlearningConfig
    evaluations: pd.DataFrame  # one row per (step, item): response, score, rouge_l
    losses: dict[str, list[float]] = field(default_factory=dict)  # task unlearned -> loss per step
    resumed_from: int = 0  # steps found finished when the run started

    @property
    def tasks(self) -> tuple[str, ...]:
        """The requests in the order they were unlearned (task letters, or request ids)."""
        return tuple(self.config.tasks)

    def matrix(self, kind: str) -> pd.DataFrame:
        """Rows: task evaluated (X); columns: last task unlearned (UY). Forget quality on forget
        items, utility on retain items; judged items only."""
        role = FORGET if kind == "forget_quality" else RETAIN
        part = self.evaluations[self.evaluations["role"] == role]
        table = {f"U{y}": {x: score_ratio(g["score"]).value for x, g in part[part["unlearned"] == y].groupby("task")}
                 for y in self.tasks}
        return pd.DataFrame(table).reindex(sorted(part["task"].unique()))

    def rouge_matrix(self, role: str) -> pd.DataFrame:
        part = self.evaluations[self.evaluations["role"] == role]
        return part.pivot_table(index="task", columns="unlearned", values="rouge_l", aggfunc="mean").rename(
            columns=lambda y: f"U{y}")[[f"U{y}" for y in self.tasks if y in set(part["unlearned"])]]

    def stability(self, kind: str) -> float:
        """Σ_t |P(M_t, t) − P(M_T, t)|: how far each task's score drifted from right after it was
        unlearned to the end of the sequence (0 = perfectly stable)."""
        m = self.matrix(kind)
        last = f"U{self.tasks[-1]}"
        return float(sum(abs(m.loc[t, f"U{t}"] - m.loc[t, last]) for t in self.tasks
                         if t in m.index and pd.notna(m.loc[t, f"U{t}"]) and pd.notna(m.loc[t, last])))

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of the tracking contract."""
        order = list(self.tasks)

        def named(x: str, col: str) -> bool:  # X-UY exists once X has been unlearned, i.e. X no later than Y
            return x in order and order.index(x) <= order.index(col[1:])

        out: dict[str, float] = {}
        for kind in ("forget_quality", "utility"):
            m = self.matrix(kind)
            out.update({f"{kind}/{x}-{col}": float(m.loc[x, col]) for x in m.index for col in m.columns
                        if named(x, col) and pd.notna(m.loc[x, col])})
            out[f"stability/{kind}"] = self.stability(kind)
        for role in (FORGET, RETAIN):
            r = self.rouge_matrix(role)
            out.update({f"rouge_l/{role}/{x}-{col}": float(r.loc[x, col]) for x in r.index for col in r.columns
                        if named(x, col)})
        final = self.evaluations[self.evaluations["unlearned"] == self.tasks[-1]]
        for (role, variant), g in final.groupby(["role", "variant"]):
            kind = "forget_quality" if role == FORGET else "utility"
            value = score_ratio(g["score"]).value
            if value is not None:
                out[f"paraphrase/{kind}/v{int(variant)}"] = value
        out["judge/missing"] = float(self.evaluations["score"].isna().sum())
        return out


def sequence_key(config: UnlearningConfig, base_model_key: str, data_digest: str, eval_digest: str, judge: str) -> str:
    """What a finished sequence depends on: a step is reused only when all of it is unchanged."""
    return hashlib.sha256(json.dumps([config.as_dict(), base_model_key, data_digest, eval_digest, judge],
                                     sort_keys=True).encode()).hexdigest()


def _step_dir(work_dir: Path, index: int, task: str) -> Path:
    return work_dir / f"step-{index}-{task}"


def run_sequence(base_model_path: str, train_items: pd.DataFrame, eval_items: pd.DataFrame, load_image,
                 judge, config: UnlearningConfig, work_dir: Path,
                 on_step: Callable[[int, str, str], None] | None = None) -> SequenceResult:
    """Run (or resume) the sequence; `on_step(index, task, phase)` reports progress."""
    from .adapters import train_adapter
    from .evaluation import evaluate_all
    from .methods import get_method
    from .models.vlm import VisionLanguageModel, seed_everything, torch_threads

    config.validate(set(train_items["task"]) | set(eval_items["task"]))
    torch_threads()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    method = get_method(config.method, beta=config.beta, retain_weight=config.retain_weight,
                        refusal_weight=config.refusal_weight)

    finished = 0  # steps already done by an earlier, interrupted run
    while finished < len(config.order) and (_step_dir(work_dir, finished, config.order[finished]) / DONE).is_file():
        finished += 1
    resumed_from = finished
    if finished == len(config.order):
        vlm = None
    elif finished == 0:
        vlm = VisionLanguageModel.load(base_model_path)
    else:
        vlm = VisionLanguageModel.load(_step_dir(work_dir, finished - 1, config.order[finished - 1]) / "model")

    for index in range(finished, len(config.order)):
        task = config.order[index]
        step_dir = _step_dir(work_dir, index, task)
        shutil.rmtree(step_dir, ignore_errors=True)  # a crashed attempt of this step starts over
        step_dir.mkdir(parents=True)
        step_seed = config.seed * 1000 + index
        seed_everything(step_seed)
        if on_step:
            on_step(index, task, "train")
        adapted, losses = train_adapter(vlm, method, train_items, task, config, step_seed, load_image)
        vlm.model = adapted.merge_and_unload()  # the backbone now carries this task's update
        if on_step:
            on_step(index, task, "evaluate")
        evaluation = evaluate_all(vlm, eval_items, load_image, judge, config)
        evaluation.insert(0, "unlearned", task)
        evaluation.insert(1, "step", index)
        vlm.save(step_dir / "model")
        evaluation.to_parquet(step_dir / "evaluation.parquet", index=False)
        (step_dir / "losses.json").write_text(json.dumps(losses))
        (step_dir / DONE).write_text("")
        if index > 0:  # only the newest checkpoint is needed to resume
            shutil.rmtree(_step_dir(work_dir, index - 1, config.order[index - 1]) / "model", ignore_errors=True)
        if on_step:
            on_step(index, task, "done")
    return load_sequence(work_dir, config, resumed_from)


def load_sequence(work_dir: Path, config: UnlearningConfig, resumed_from: int = 0) -> SequenceResult:
    frames, losses = [], {}
    for index, task in enumerate(config.order):
        step_dir = _step_dir(Path(work_dir), index, task)
        frames.append(pd.read_parquet(step_dir / "evaluation.parquet"))
        losses[task] = json.loads((step_dir / "losses.json").read_text())
    return SequenceResult(config, pd.concat(frames, ignore_index=True), losses, resumed_from)
