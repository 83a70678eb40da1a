"""LUMoE over the same protocol as the baselines: requests arrive in order; after each, its
expert joins the mixture, the router is refreshed, and every task is evaluated. The backbone is
never touched, so a task's scores can only move through routing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..benchmark import TASKS
from ..evaluation import score_answers
from .answers import AnswerCache
from ..router import ROUTER_RECIPES
from ..router.base import Registry, router_quality
from ..sequences import SequenceResult, format_order, xuy_metric


@dataclass(frozen=True)
class LumoeConfig:
    tasks: tuple[str, ...] = TASKS  # requests in order of arrival
    router: str = "local"  # local | openai | oracle
    mode: str = "grouped"  # grouped | mixed
    max_new_tokens: int = 64
    eval_batch_size: int = 32
    method: str = "lumoe"

    def as_dict(self) -> dict:
        return {**asdict(self), "tasks": ",".join(self.tasks)}

    def params(self) -> dict:
        return self.as_dict()

    @property
    def order(self) -> str:
        return format_order(self.tasks)


def request_order(experts: dict) -> list[str]:
    """The order requests arrived in: the benchmark's tasks first, in their order, then every
    later request by when its expert was first registered (`experts`: request -> RegisteredExpert)."""
    later = sorted((t for t in experts if t not in TASKS), key=lambda t: experts[t].created)
    return [t for t in TASKS if t in experts] + later


def run_lumoe_sequence(base_model_path: str, experts: dict[str, tuple[str, list[str]]], names: dict[str, list[str]],
                       eval_items: pd.DataFrame, load_image, judge, make_router: Callable[[object, Registry], object],
                       config: LumoeConfig, on_step: Callable[[int, str, str], None] | None = None,
                       answers: AnswerCache | None = None):
    """experts: task -> (adapter path, forget entity ids); returns the SequenceResult (with the
    route of every item) and the router quality after each step. make_router(vlm, registry) is
    called once; after each request the router is refreshed with the new registry. An item sent
    where it went at an earlier step keeps its answer (`answers`, a fresh AnswerCache by default,
    counts what was generated)."""
    from ..lumoe.mixture import ExpertMixture

    missing = [t for t in config.tasks if t not in experts]
    if missing:
        raise ValueError(f"no expert for {', '.join(missing)}: materialize lumoe_experts for them first")
    items = eval_items.reset_index(drop=True)
    if items.empty:  # the base model knows none of the items: nothing to route, answer or unlearn
        return _nothing_known(items, judge, config), [_no_routes(task) for task in config.tasks]
    mixture = ExpertMixture(base_model_path)
    answers = AnswerCache() if answers is None else answers
    inputs = list(zip(items["image"], items["question"]))  # what each answer depends on, besides model and route
    # A list, read once: the routers key their features by the image object, and the evaluation
    # items' pictures (2,745 on `full`) are asked for after every request.
    images = [load_image(p) for p in items["image"]]
    frames, quality = [], []
    router = None
    for index, task in enumerate(config.tasks):
        if on_step:
            on_step(index, task, "route")
        mixture.add_expert(task, experts[task][0])
        registry = Registry({t: experts[t][1] for t in config.tasks[: index + 1]}, names)
        with mixture.vlm.model.disable_adapter():  # the router looks through the base model's eyes
            if router is None:
                router = make_router(mixture.vlm, registry)
            else:
                router.refresh(registry)  # built once; only what it routes to changes
            routes = router.route(images, items["question"].tolist(), items["entity_id"].tolist())
        if on_step:
            on_step(index, task, "evaluate")
        responses = answers.generate(mixture, images, items["question"].tolist(), [r.task for r in routes], inputs,
                                     mode=config.mode, batch_size=config.eval_batch_size,
                                     max_new_tokens=config.max_new_tokens)
        frame = score_answers(items, responses, judge)
        truth = [registry.task_of(e) for e in items["entity_id"]]
        frame["route"], frame["true_route"] = [r.task for r in routes], truth
        frame["route_reason"] = [r.reason for r in routes]
        frame.insert(0, "unlearned", task)
        frame.insert(1, "step", index)
        frames.append(frame)
        per_task, summary = router_quality(routes, truth, items["role"].tolist())
        quality.append({"after": task, **summary, "missing": getattr(router, "missing", 0),  # API routes not had
                        "per_task": per_task.to_dict("records")})
    return SequenceResult(config, pd.concat(frames, ignore_index=True)), quality


def _no_routes(task: str) -> dict:
    return {"after": task, "accuracy": None, "retain_to_expert_rate": None, "forget_recall": None, "missing": 0,
            "per_task": []}


def _nothing_known(items: pd.DataFrame, judge, config: LumoeConfig) -> SequenceResult:
    """The result of a sequence over no items: every step's (empty) table, so the sequence's
    `nothing_to_unlearn` says why, and every score is absent rather than 0."""
    frame = score_answers(items, [], judge)
    for column in ("route", "true_route", "route_reason"):
        frame[column] = pd.Series(dtype=object)
    frame.insert(0, "unlearned", pd.Series(dtype=object))
    frame.insert(1, "step", pd.Series(dtype="int64"))
    return SequenceResult(config, frame)


def lumoe_key(config: LumoeConfig, base_model_key: str, data_digest: str, expert_keys: list[str], eval_digest: str,
              judge: str, distractors: list[str] = ()) -> str:
    """What a finished LUMoE sequence depends on (the data too: the local router's gallery comes
    from it, and the distractor images its threshold is calibrated on); the same key means the
    same numbers (the router's rule too: `ROUTER_RECIPES`)."""
    if config.router not in ROUTER_RECIPES:
        raise ValueError(f"MLU_ROUTER={config.router!r}: choose one of {', '.join(ROUTER_RECIPES)} "
                         "(a new router needs its entry in router.ROUTER_RECIPES)")
    return hashlib.sha256(json.dumps([config.as_dict(), ROUTER_RECIPES[config.router], base_model_key,
                                      data_digest, expert_keys, eval_digest, judge, sorted(distractors)],
                                     sort_keys=True).encode()).hexdigest()


def save_finished(work_dir: Path, result: SequenceResult, quality: list[dict]) -> None:
    """Keep a finished sequence (its evaluations and router quality) so the same key reads it back."""
    import io

    from ..paths import atomic_write_bytes

    buf = io.BytesIO()
    result.evaluations.to_parquet(buf, index=False)
    atomic_write_bytes(Path(work_dir) / "evaluations.parquet", buf.getvalue())
    atomic_write_bytes(Path(work_dir) / "router_quality.json", json.dumps(quality).encode())  # written last


def load_finished(work_dir: Path, config: LumoeConfig) -> tuple[SequenceResult, list[dict]] | None:
    quality = Path(work_dir) / "router_quality.json"
    if not quality.is_file():
        return None
    evaluations = pd.read_parquet(Path(work_dir) / "evaluations.parquet")
    return SequenceResult(config, evaluations, resumed_from=len(config.tasks)), json.loads(quality.read_text())


def router_metrics(quality: list[dict]) -> dict[str, float]:
    """Router quality after each request, as MLflow metrics (router/<measure>/U<request>)."""
    out = {}
    for step in quality:
        after = step["after"]
        for key in ("accuracy", "retain_to_expert_rate", "forget_recall", "missing"):
            if step[key] is not None:
                out[f"router/{key}/U{after}"] = step[key]
        for row in step["per_task"]:
            for key in ("precision", "recall"):
                if row[key] is not None:
                    out[xuy_metric(f"router/{key}", row["task"], after)] = row[key]
    return out


def run_or_read_lumoe(work_dir: Path, base_model_path: str, experts: dict, names: dict[str, list[str]],
                      eval_items: pd.DataFrame, load_image, judge, make_router, config: LumoeConfig,
                      on_step: Callable[[int, str, str], None] | None = None):
    """(result, router quality, read back?): a sequence finished under the same key in `work_dir`
    is read back (the same key gives the same numbers), otherwise it is run and kept there.
    `experts`: request -> RegisteredExpert."""
    finished = load_finished(work_dir, config)
    if finished:
        return (*finished, True)
    result, quality = run_lumoe_sequence(base_model_path, {t: (experts[t].adapter, experts[t].entities) for t in config.tasks},
                                         names, eval_items, load_image, judge, make_router, config, on_step)
    save_finished(work_dir, result, quality)
    return result, quality, False
