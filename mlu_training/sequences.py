"""A sequence's result, whoever produced it (a baseline's `lifelong.run_sequence` or LUMoE's
`lumoe.sequence.run_lumoe_sequence`): the X-UY matrices, the metrics and their names, the run
tags, and the one MLflow run it is logged as. The report reads the runs back through the same
names, so a metric name is formatted and parsed here and nowhere else.

X-UY is task X evaluated after unlearning request Y; it exists once X has been unlearned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import pandas as pd

from .benchmark import DEFAULT_ORDER, FORGET, KINDS, RETAIN, SCORE_ROLE, TASKS
from .metrics import score_ratio

# Forgetting measured on its own: the utility rubric on forget items (how much of what was to be
# forgotten is still answered correctly); forget quality rewards refusals only.
FORGET_CORRECTNESS = "forget_correctness"
CI_LEVEL = 0.95  # every interval mlu reports
N_BOOT = 1000
SEQUENCE_RUN_KINDS = ("unlearning_sequence", "lumoe_sequence")  # tag mlu.kind of a sequence's run
NOTHING_TAG = "mlu.nothing_to_unlearn"  # run tag: JSON {task: reason} of the tasks with nothing to unlearn
NOTHING_KNOWN = "nothing to unlearn: the base model knows none of its evaluation items"
NOTHING_KNOWN_FORGET = "nothing to unlearn: the base model knows none of its forget evaluation items"


def nothing_to_unlearn(items: pd.DataFrame, tasks) -> dict[str, str]:
    """task -> why there is nothing to unlearn, for each task of which the knowledge filter kept no
    forget item (a model that does not know an entity cannot forget it, and forget quality cannot
    be measured on nothing): a normal outcome for a real checkpoint, recorded, not an error."""
    out = {}
    for task in tasks:
        mine = items[items["task"] == task] if "task" in items.columns else items.iloc[0:0]
        if mine.empty:
            out[task] = NOTHING_KNOWN
        elif not (mine["role"] == FORGET).any():
            out[task] = NOTHING_KNOWN_FORGET
    return out


def describe_nothing(reasons: dict[str, str], tasks) -> str | None:
    """One line for people: `A, B, C, D: nothing to unlearn: …` (grouped by reason), or None."""
    if not reasons:
        return None
    by_reason: dict[str, list[str]] = {}
    for task in tasks:
        if task in reasons:
            by_reason.setdefault(reasons[task], []).append(task)
    return "; ".join(f"{', '.join(ts)}: {reason}" for reason, ts in by_reason.items())


# -- names ------------------------------------------------------------------------------------

def xuy_metric(name: str, x: str, y: str) -> str:
    """`forget_quality/A-UC`, `rouge_l/forget/A-UC`, `router/recall/A-UC`: a value of task x after request y."""
    return f"{name}/{x}-U{y}"


def stability_metric(kind: str) -> str:
    return f"stability/{kind}"


def summary_metric(kind: str, summary: str) -> str:
    """`summary/utility/bwt`: a continual-learning summary of one kind (stats.SUMMARIES)."""
    return f"summary/{kind}/{summary}"


def ci_low(metric: str) -> str:
    return f"{metric}/ci_low"


def ci_high(metric: str) -> str:
    return f"{metric}/ci_high"


def format_order(tasks) -> str:
    """A request order as a tag: `ABCD` for task letters, `A,B,C,D,forget-taylor` otherwise."""
    tasks = list(tasks)
    return "".join(tasks) if all(len(t) == 1 for t in tasks) else ",".join(tasks)


def parse_order(order: str) -> list[str]:
    return order.split(",") if "," in order else list(order)


def method_label(tags: dict) -> str:
    """A row's method: its name, with the part it was confined to when not the language model
    (`ga [projector]`: the paper's unimodal ablation is a row of its own) and its task order when
    another permutation of the benchmark's tasks (`ga (CABD)`: another order is another row, never
    pooled with the first; LUMoE's later requests extend its order and keep its row)."""
    targets = tags.get("mlu.targets", "language")
    label = tags.get("mlu.method", "") if targets == "language" else f"{tags.get('mlu.method', '')} [{targets}]"
    order = tags.get("mlu.order", DEFAULT_ORDER)
    permuted = order != DEFAULT_ORDER and sorted(parse_order(order)) == sorted(TASKS)
    return f"{label} ({order})" if permuted else label


def sequence_tags(kind: str, method: str, order: str, profile: str, base_model, sequence_key: str, judge: str,
                  seed: int | str = 0, config_key: str | None = None, **extra: str) -> dict[str, str]:
    """The tags of a sequence's run: what the report selects, labels rows by, and pools seeds by
    (runs of one config key and different seeds, of the sequence or of its base model, are one
    experiment repeated)."""
    assert kind in SEQUENCE_RUN_KINDS, kind
    return {"mlu.kind": kind, "mlu.method": method, "mlu.order": order, "mlu.profile": profile,
            "mlu.base_model": base_model.model_uri, "mlu.model": base_model.name, "mlu.sequence_key": sequence_key,
            "mlu.judge": judge, "mlu.seed": str(seed), "mlu.config_key": config_key or sequence_key,
            "mlu.base_seed": "" if base_model.seed is None else str(base_model.seed), **extra}


# -- the result -------------------------------------------------------------------------------

class SequenceConfig(Protocol):
    method: str

    @property
    def tasks(self) -> tuple[str, ...]: ...

    def as_dict(self) -> dict: ...

    def params(self) -> dict: ...  # flat, for MLflow


@dataclass(frozen=True)
class PooledSeeds:
    """The config of one sequence repeated with several seeds, pooled (a `seed` column in the
    evaluations): its matrices are over every seed's answers, its intervals resample seeds too."""

    method: str
    tasks: tuple[str, ...]
    seeds: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"method": self.method, "tasks": ",".join(self.tasks), "seeds": ",".join(self.seeds)}

    def params(self) -> dict:
        return self.as_dict()


@dataclass
class SequenceResult:
    config: SequenceConfig
    evaluations: pd.DataFrame  # one row per (step, item): unlearned, step, task, role, variant, response, score, rouge_l
    losses: dict[str, list[float]] = field(default_factory=dict)  # task unlearned -> loss per step
    resumed_from: int = 0  # steps found finished when the run started

    @property
    def tasks(self) -> tuple[str, ...]:
        """The requests in the order they were unlearned (task letters, or request ids)."""
        return tuple(self.config.tasks)

    @property
    def order(self) -> str:
        return format_order(self.tasks)

    @property
    def nothing_to_unlearn(self) -> dict[str, str]:
        """task -> reason, for the tasks of which no forget item was evaluated (none was known)."""
        evaluations = self.evaluations
        if "unlearned" in evaluations.columns:  # every step asks the same items: the first step's say which
            evaluations = evaluations[evaluations["unlearned"] == self.tasks[0]]
        return nothing_to_unlearn(evaluations, self.tasks)

    @cached_property
    def intervals(self) -> dict:
        """metric name -> stats.Interval: every X-UY score and every continual-learning summary,
        with a 95 % interval from the entity/question (and seed) cluster bootstrap of stats.py."""
        from .stats import cell_intervals, summaries

        out = {}
        for kind in KINDS:
            for (x, y), interval in cell_intervals(self.evaluations, self.tasks, kind, N_BOOT, CI_LEVEL).items():
                out[xuy_metric(kind, x, y)] = interval
            for name, interval in summaries(self.evaluations, self.tasks, kind, N_BOOT, CI_LEVEL).items():
                out[summary_metric(kind, name)] = interval
        correctness = self._scored(FORGET_CORRECTNESS)  # as forget-role rows scored by correctness
        if not correctness.empty:
            for (x, y), interval in cell_intervals(correctness, self.tasks, "forget_quality", N_BOOT, CI_LEVEL).items():
                out[xuy_metric(FORGET_CORRECTNESS, x, y)] = interval
        return out

    def _scored(self, kind: str) -> pd.DataFrame:
        """The rows a kind is computed over, with that kind's judgement as `score`."""
        if kind == FORGET_CORRECTNESS:
            part = self.evaluations[self.evaluations["role"] == FORGET]
            return part.assign(score=part["correctness"]) if "correctness" in part else part.iloc[:0]
        return self.evaluations[self.evaluations["role"] == SCORE_ROLE[kind]]

    def matrix(self, kind: str) -> pd.DataFrame:
        """Rows: task evaluated (X); columns: last task unlearned (UY). Forget quality on forget
        items, utility on retain items, forget correctness on forget items; judged items only."""
        part = self._scored(kind)
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
        measured = [t for t in self.tasks if t in m.index and pd.notna(m.loc[t, f"U{t}"]) and pd.notna(m.loc[t, last])]
        if not measured:
            return float("nan")  # nothing was measured (nothing known): no number, not a perfect 0
        return float(sum(abs(m.loc[t, f"U{t}"] - m.loc[t, last]) for t in measured))

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of the tracking contract (computed once: logging, the asset's
        summary and the metadata all read them)."""
        return dict(self._metrics)

    @cached_property
    def _metrics(self) -> dict[str, float]:
        """Computed by the first call of metrics()."""
        order = list(self.tasks)

        def exists(x: str, col: str) -> bool:  # X-UY exists once X has been unlearned, i.e. X no later than Y
            return x in order and order.index(x) <= order.index(col[1:])

        out: dict[str, float] = {}
        for kind in KINDS:
            m = self.matrix(kind)
            out.update({xuy_metric(kind, x, col[1:]): float(m.loc[x, col]) for x in m.index for col in m.columns
                        if exists(x, col) and pd.notna(m.loc[x, col])})
            if pd.notna(stability := self.stability(kind)):
                out[stability_metric(kind)] = stability
        if not self._scored(FORGET_CORRECTNESS).empty:
            m = self.matrix(FORGET_CORRECTNESS)
            out.update({xuy_metric(FORGET_CORRECTNESS, x, col[1:]): float(m.loc[x, col]) for x in m.index
                        for col in m.columns if exists(x, col) and pd.notna(m.loc[x, col])})
        for role in (FORGET, RETAIN):
            r = self.rouge_matrix(role)
            out.update({xuy_metric(f"rouge_l/{role}", x, col[1:]): float(r.loc[x, col]) for x in r.index
                        for col in r.columns if exists(x, col)})
        final = self.evaluations[self.evaluations["unlearned"] == self.tasks[-1]]
        for (role, variant), g in final.groupby(["role", "variant"]) if len(final) else ():
            kind = "forget_quality" if role == FORGET else "utility"
            value = score_ratio(g["score"]).value
            if value is not None:
                out[f"paraphrase/{kind}/v{int(variant)}"] = value
        out["judge/missing"] = float(self.evaluations["score"].isna().sum())
        for name, interval in self.intervals.items():
            if name.startswith("summary/") and interval.value is not None:
                out[name] = interval.value
            if interval.low is not None and (name in out):
                out[ci_low(name)], out[ci_high(name)] = interval.low, interval.high
        return out


def matrix_from_metrics(metrics: dict[str, float], kind: str, tasks: list[str], bound: str | None = None) -> pd.DataFrame:
    """An X-UY matrix read back from a run's metrics (the inverse of SequenceResult.metrics), or
    its interval's `bound` ("low" | "high"): looked up by formatted name, so request ids with '-'
    in them read back unambiguously."""
    name = {None: xuy_metric, "low": lambda *a: ci_low(xuy_metric(*a)), "high": lambda *a: ci_high(xuy_metric(*a))}[bound]
    table = {f"U{y}": {x: metrics.get(name(kind, x, y)) for x in tasks} for y in tasks}
    return pd.DataFrame(table).reindex(tasks)


def final_values(metrics: dict[str, float], name: str, tasks: list[str]) -> list[float]:
    """Every task's value of X-UY metric `name` after the last request (those that exist)."""
    values = (metrics.get(xuy_metric(name, x, tasks[-1])) for x in tasks)
    return [v for v in values if v is not None]


# -- what the assets hand on, and the run -----------------------------------------------------

@dataclass(frozen=True)
class SequenceSummary:
    """The value of a sequence asset (baseline or LUMoE): the matrices, metrics and its MLflow run."""

    method: str
    order: str
    run_id: str
    sequence_key: str
    forget_quality: dict  # the X-UY matrix as {UY: {X: value}}
    utility: dict
    metrics: dict[str, float]
    steps_reused: int  # steps read back instead of computed
    router: list | None = None  # LUMoE: router quality after each request
    nothing_to_unlearn: dict | None = None  # task -> reason, for the tasks the base model knew nothing of

    @classmethod
    def of(cls, result: SequenceResult, run_id: str, sequence_key: str, router: list | None = None) -> "SequenceSummary":
        return cls(method=result.config.method, order=result.order, run_id=run_id, sequence_key=sequence_key,
                   forget_quality=result.matrix("forget_quality").to_dict(), utility=result.matrix("utility").to_dict(),
                   metrics=result.metrics(), steps_reused=result.resumed_from, router=router,
                   nothing_to_unlearn=result.nothing_to_unlearn or None)


def log_sequence(store, result: SequenceResult, tags: dict[str, str], artifacts_dir: Path,
                 extra_metrics: dict[str, float] | None = None) -> str:
    """One MLflow run per sequence: the config as params, every X-UY metric, stability, ROUGE-L,
    paraphrase results, loss curves per task, the heatmaps and the answers. Returns its id."""
    import json

    import mlflow

    from .figures import heatmap_png

    config = result.config
    if result.nothing_to_unlearn:
        tags = {**tags, NOTHING_TAG: json.dumps(result.nothing_to_unlearn)}
    with store.start_run(f"{config.method}-{result.order}", tags) as run:
        mlflow.log_params(config.params())
        mlflow.log_metrics(result.metrics() | (extra_metrics or {}))  # computed once: cached intervals
        store.log_curves(run.info.run_id, {f"train/loss/U{task}": v for task, v in result.losses.items()})
        artifacts_dir = Path(artifacts_dir)
        metrics = result.metrics()
        for kind in KINDS:
            heatmap_png(result.matrix(kind), f"{config.method} {kind.replace('_', ' ')} (X-UY, 95 % CI)",
                        artifacts_dir / f"{kind}_heatmap.png", matrix_from_metrics(metrics, kind, list(result.tasks), "low"),
                        matrix_from_metrics(metrics, kind, list(result.tasks), "high"))
            mlflow.log_artifact(str(artifacts_dir / f"{kind}_heatmap.png"), "heatmaps")
        answers = artifacts_dir / "answers.jsonl"
        result.evaluations.to_json(answers, orient="records", lines=True, force_ascii=False)
        mlflow.log_artifact(str(answers), "answers")
        return run.info.run_id


def logged_run(store, result: SequenceResult, tags: dict[str, str], artifacts_dir: Path,
               extra_metrics: dict[str, float] | None = None) -> str:
    """The run of this sequence: the one already logged for its key on this base model (the same
    key gives the same numbers), or a new one. Identical weights under two names share the work,
    but each base model gets its own run. A run found gets today's tags (the config key and base
    seed the report pools by may be newer than the run)."""
    previous = store.find_run({"mlu.sequence_key": tags["mlu.sequence_key"], "mlu.model": tags["mlu.model"]})
    if previous is not None:
        store.set_run_tags(previous.info.run_id, {k: v for k, v in tags.items() if previous.data.tags.get(k) != v})
        return previous.info.run_id
    return log_sequence(store, result, tags, artifacts_dir, extra_metrics)
