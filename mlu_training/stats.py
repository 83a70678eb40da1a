"""Confidence intervals for the X-UY scores and for the continual-learning summaries of a
sequence, by a hierarchical cluster bootstrap (numpy only, vectorised).

What is measured
----------------
After each request Y of a sequence every evaluation item of every task X is answered and judged
0, 1 or 2 (or missing: `<NA>`, left out of both sums, never read as 0). The X-UY cell of kind
"forget_quality" is, over the forget-role rows of task X evaluated after step Y,

    P(M_Y, X) = Σ score / (2 · n judged)

and "utility" is the same over the retain-role rows.

Why clusters, and which
-----------------------
The rows of a cell are not independent draws. Each question is asked in up to five phrasings
(`variant` 0-4) that share one ground-truth `answer`; the model's answers to them stand or fall
together, so the rows sharing (`entity_id`, `answer`) form one *question cluster*. The questions
in turn are about a handful of entities (a person, an object), and what a model forgets it
forgets per entity, so the *entity* is the sampling unit: a new benchmark would draw new
entities, with new questions about them. Resampling rows as if they were independent
(`item_bootstrap_ci`) therefore understates the uncertainty, by up to the number of phrasings in
variance when phrasings agree. The bootstrap here follows the design, top down:

  (a) seeds: when the frame has a `seed` column with more than one value (the same sequence
      trained with several seeds), the seeds are resampled with replacement first; seeds and
      items are *crossed* (every seed judged the same items), so one draw of items is shared
      by all drawn seeds, as in a two-way (pigeonhole) bootstrap. With a `base_seed` column
      (sequences on base models taught with different seeds) the base seeds are drawn first,
      then within each its own sequence seeds, as many as it has: a base model's seed is the
      outer unit, since its sequences share its weights and what it knows;
  (b) entities: resampled with replacement;
  (c) questions: within each drawn entity (each draw separately), its question clusters are
      resampled with replacement, all phrasings of a drawn question coming along.

The statistic of a replicate is Σ score / (2 · n judged) over every row drawn (a row drawn k
times counts k times); the interval is the percentile interval of the replicates. Edge cases:
one entity -> only the questions vary; one question cluster -> the interval collapses onto the
value; nothing judged -> value, low and high are None. With the few entities per task side of
MLUBench (e.g. 2) the intervals are honest about how little one benchmark can tell, not
precise: a percentile bootstrap over 2 entities has fewer distinct replicates than it has draws.

Summaries, resampled jointly
----------------------------
With T the last request and P(M_y, x) the X-UY cell:

    average    = mean_t P(M_T, t)                            (the final column)
    last       = P(M_T, T)                                   (the last task, at the end)
    bwt        = mean_{t<T} [P(M_T, t) − P(M_t, t)]          (backward transfer)
    worst_drop = max_{t<T}  [P(M_t, t) − P(M_T, t)]          (largest fall of any task; < 0 if all rose)

(cells with nothing judged are left out of the mean / max; bwt and worst_drop are None for a
one-task sequence). Cells share items: task t's items judged after step t and after step T are
the same items, and the summaries combine such cells. Each replicate therefore draws entities,
questions (and seeds) once and recomputes the *whole* matrix from that one draw, so a summary's
interval carries the correlation between its cells (a task whose every item scores the same
after t and after T has a bwt term of exactly 0 in every replicate). Every task side has its own
entities, so the draw is stratified: the entities of each (task, role) are resampled among
themselves, the same number as there are, and the drawn entities and questions are reused for
every step Y. A percentile interval of a max (worst_drop) can sit beside its value when two
tasks fall by about as much: the replicate max is biased upward.

Columns read: `score` (Int64, may be NA), `entity_id`, `answer`, optional `seed` and `base_seed`; and for the
matrix functions also `unlearned` (the step's request), `task` and `role`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .benchmark import SCORE_ROLE
from .metrics import MAX_SCORE

__all__ = ["Interval", "score_ci", "cell_intervals", "summaries", "item_bootstrap_ci", "SUMMARIES"]

SUMMARIES = ("average", "last", "bwt", "worst_drop")


@dataclass(frozen=True)
class Interval:
    value: float | None  # the plain ratio (or summary) on the data as it is; None when nothing judged
    low: float | None  # percentile bounds of the bootstrap replicates
    high: float | None
    n_clusters: int  # question clusters (entity, answer) with a judged row that the value rests on


_NONE = Interval(None, None, None, 0)


# -- randomness -------------------------------------------------------------------------------

def _rng(seed: int | None, *labels) -> np.random.Generator:
    """A generator determined by (seed, labels): stable across processes (no salted hash()), and
    different labels give unrelated streams. seed=None: fresh entropy."""
    if seed is None:
        return np.random.default_rng()
    digest = hashlib.sha256(json.dumps([seed, *labels], default=str).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


def _check(n_boot: int, level: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


# -- the design: who is nested in whom, and the sums per cluster ------------------------------

def _scores(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(frame["score"]).astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _codes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    if not columns:
        return np.zeros(len(frame), dtype=np.int64)
    return frame.groupby(columns, sort=True, dropna=False).ngroup().to_numpy(dtype=np.int64)


@dataclass
class _Design:
    """Judged rows reduced to what the bootstrap needs. Clusters are numbered so that each
    entity's clusters are contiguous and each stratum's entities are contiguous."""
    sums: np.ndarray  # (S, K, C): Σ score per seed, slot (cell) and cluster
    counts: np.ndarray  # (S, K, C): n judged
    seed_group: np.ndarray  # (S,) the base seed of each seed (all 0 without a base_seed column)
    entity_stratum: np.ndarray  # (E,) stratum of each entity (non-decreasing)
    stratum_start: np.ndarray  # (n strata,) first entity of the stratum
    stratum_size: np.ndarray  # (n strata,) its number of entities
    cluster_start: np.ndarray  # (E,) first cluster of the entity
    cluster_count: np.ndarray  # (E,) its number of clusters
    cluster_stratum: np.ndarray  # (C,)

    @property
    def n_clusters(self) -> int:
        return self.sums.shape[2]


def _design(judged: pd.DataFrame, strata: list[str], slot: np.ndarray, n_slots: int) -> _Design:
    """`judged`: rows with a score; `strata`: the columns entities are nested in (may be empty);
    `slot`: per row, which statistic (cell) it counts towards."""
    scores = _scores(judged)
    stratum = _codes(judged, strata)
    entity = _codes(judged, strata + ["entity_id"])
    cluster = _codes(judged, strata + ["entity_id", "answer"])
    base_column = ["base_seed"] if "base_seed" in judged.columns else []
    seeds = _codes(judged, base_column + (["seed"] if "seed" in judged.columns else []))  # numbered base seed first
    bases = _codes(judged, base_column)
    # groupby sorts lexicographically, so (stratum, entity, cluster) codes are already nested and
    # contiguous; the checks below hold by construction and guard that assumption.
    n_seeds, n_entities, n_clusters = seeds.max() + 1, entity.max() + 1, cluster.max() + 1
    ent_of_cluster = np.zeros(n_clusters, dtype=np.int64)
    ent_of_cluster[cluster] = entity
    stratum_of_entity = np.zeros(n_entities, dtype=np.int64)
    stratum_of_entity[entity] = stratum
    assert np.all(np.diff(ent_of_cluster) >= 0) and np.all(np.diff(stratum_of_entity) >= 0)
    flat = (seeds * n_slots + slot) * n_clusters + cluster
    size = n_seeds * n_slots * n_clusters
    sums = np.bincount(flat, weights=scores, minlength=size).reshape(n_seeds, n_slots, n_clusters)
    counts = np.bincount(flat, minlength=size).astype(float).reshape(n_seeds, n_slots, n_clusters)
    cluster_count = np.bincount(ent_of_cluster, minlength=n_entities)
    stratum_size = np.bincount(stratum_of_entity)
    seed_group = np.zeros(n_seeds, dtype=np.int64)
    seed_group[seeds] = bases
    return _Design(sums, counts, seed_group, stratum_of_entity, np.concatenate([[0], np.cumsum(stratum_size)[:-1]]),
                   stratum_size, np.concatenate([[0], np.cumsum(cluster_count)[:-1]]), cluster_count,
                   stratum_of_entity[ent_of_cluster])


def _replicates(design: _Design, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, K) statistic per replicate and slot; NaN where a replicate drew nothing judged."""
    e_strat = design.entity_stratum
    n_entities, n_clusters = len(e_strat), design.n_clusters
    # (b) entities: each stratum's entities among themselves, as many as it has
    u = rng.random((n_boot, n_entities))
    drawn = design.stratum_start[e_strat] + np.floor(u * design.stratum_size[e_strat]).astype(np.int64)
    # (c) questions: within each drawn entity, its clusters, as many as it has
    k = design.cluster_count[drawn]  # (B, E)
    k_max = int(design.cluster_count.max())
    v = rng.random((n_boot, n_entities, k_max))
    picked = design.cluster_start[drawn][..., None] + np.floor(v * k[..., None]).astype(np.int64)
    keep = np.arange(k_max) < k[..., None]
    flat = (np.arange(n_boot)[:, None, None] * n_clusters + picked)[keep]
    weights = np.bincount(flat, minlength=n_boot * n_clusters).reshape(n_boot, n_clusters).astype(float)
    # (a) seeds, crossed with the items: one item draw for all the drawn seeds; base seeds first,
    # then each base seed's own seeds (without base seeds: one group, the seeds drawn as before)
    n_seeds, n_slots = design.sums.shape[:2]
    groups = design.seed_group
    n_groups = int(groups.max()) + 1
    if n_groups > 1:
        # a base seed drawn c times brings c independent draws of its m seeds: m·c draws among them
        drawn = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
        seed_w = np.zeros((n_boot, n_seeds))
        for group in range(n_groups):
            members = np.flatnonzero(groups == group)
            seed_w[:, members] = rng.multinomial(drawn[:, group] * len(members), np.full(len(members), 1.0 / len(members)))
    elif n_seeds > 1:
        seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(float)
    else:
        seed_w = np.ones((n_boot, 1))
    num = np.einsum("bs,bsk->bk", seed_w, (weights @ design.sums.reshape(-1, n_clusters).T).reshape(
        n_boot, n_seeds, n_slots))
    den = np.einsum("bs,bsk->bk", seed_w, (weights @ design.counts.reshape(-1, n_clusters).T).reshape(
        n_boot, n_seeds, n_slots))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / (MAX_SCORE * den), np.nan)


def _percentiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds per column, ignoring NaN replicates (NaN where a column has none)."""
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
        low, high = np.nanquantile(values, [alpha, 1 - alpha], axis=0)
    return low, high


def _opt(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# -- one cell ---------------------------------------------------------------------------------

def _judged_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[~np.isnan(_scores(frame))]


def score_ci(frame: pd.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int | None = 0) -> Interval:
    """Σ score / (2 · n judged) over `frame` with a hierarchical cluster-bootstrap percentile
    interval: seeds (when a `seed` column holds several; base seeds first, with a `base_seed`
    column), then entities, then question clusters
    (rows sharing `answer`) within each drawn entity. Missing scores are left out, as if the rows
    were absent. Needs `score`, `entity_id`, `answer`; deterministic for a given `seed`."""
    _check(n_boot, level)
    return _score_ci(frame, n_boot, level, _rng(seed, "score_ci"))


def _score_ci(frame: pd.DataFrame, n_boot: int, level: float, rng: np.random.Generator) -> Interval:
    judged = _judged_rows(frame)
    if judged.empty:
        return _NONE
    scores = _scores(judged)
    value = float(scores.sum() / (MAX_SCORE * len(scores)))
    design = _design(judged, [], np.zeros(len(judged), dtype=np.int64), 1)
    if design.n_clusters == 1:
        return Interval(value, value, value, 1)
    low, high = _percentiles(_replicates(design, int(n_boot), rng), level)
    return Interval(value, _opt(low[0]), _opt(high[0]), design.n_clusters)


def item_bootstrap_ci(frame: pd.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int | None = 0) -> Interval:
    """The naive interval: judged rows resampled independently, ignoring phrasings, entities and
    seeds. Too narrow when rows are correlated; kept to show how much (n_clusters = n rows)."""
    _check(n_boot, level)
    scores = _scores(frame)
    scores = scores[~np.isnan(scores)]
    if not len(scores):
        return _NONE
    value = float(scores.sum() / (MAX_SCORE * len(scores)))
    n = len(scores)
    counts = _rng(seed, "item_bootstrap_ci").multinomial(n, np.full(n, 1.0 / n), size=int(n_boot))
    low, high = _percentiles((counts @ scores / (MAX_SCORE * n))[:, None], level)
    return Interval(value, _opt(low[0]), _opt(high[0]), n)


# -- the matrix -------------------------------------------------------------------------------

def _order(tasks: Sequence[str]) -> list[str]:
    tasks = list(tasks)
    if not tasks:
        raise ValueError("a sequence needs at least one request")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"each request may be unlearned once in a sequence, got {tasks}")
    return tasks


def _role(kind: str) -> str:
    try:
        return SCORE_ROLE[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {sorted(SCORE_ROLE)}, got {kind!r}") from None


def _cells(tasks: list[str]) -> list[tuple[str, str]]:
    """Every X-UY cell that exists: X no later than Y."""
    return [(x, y) for j, y in enumerate(tasks) for x in tasks[: j + 1]]


def cell_intervals(evaluations: pd.DataFrame, tasks: Sequence[str], kind: str, n_boot: int = 1000,
                   level: float = 0.95, seed: int | None = 0) -> dict[tuple[str, str], Interval]:
    """{(x, y): Interval} for every X-UY cell with X no later than Y in `tasks`: forget-role
    rows of task x after request y for "forget_quality", retain-role rows for "utility". Each
    cell draws from its own stream, seeded by (seed, kind, x, y). A cell with nothing judged
    (or no rows) is Interval(None, None, None, 0)."""
    _check(n_boot, level)
    tasks, role = _order(tasks), _role(kind)
    part = evaluations[evaluations["role"] == role]
    groups = {key: g for key, g in part.groupby(["task", "unlearned"], sort=False)}
    return {(x, y): (_score_ci(groups[(x, y)], n_boot, level, _rng(seed, "cell", kind, x, y))
                     if (x, y) in groups else _NONE)
            for x, y in _cells(tasks)}


def _summarise(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """The summaries per replicate from (R, n, n) cells matrix[r, x, y] (NaN: missing or x > y)."""
    n = matrix.shape[1]

    def nanmean(a: np.ndarray) -> np.ndarray:
        ok = np.isfinite(a)
        with np.errstate(invalid="ignore"):
            return np.where(ok, a, 0.0).sum(axis=1) / ok.sum(axis=1)

    final = matrix[:, :, n - 1]
    out = {"average": nanmean(final), "last": final[:, n - 1]}
    if n > 1:
        idx = np.arange(n - 1)
        fall = matrix[:, idx, idx] - final[:, : n - 1]  # P(M_t, t) − P(M_T, t), t < T
        out["bwt"] = nanmean(-fall)
        ok = np.isfinite(fall)
        out["worst_drop"] = np.where(ok.any(axis=1), np.where(ok, fall, -np.inf).max(axis=1), np.nan)
    else:
        out["bwt"] = out["worst_drop"] = np.full(matrix.shape[0], np.nan)
    return out


def summaries(evaluations: pd.DataFrame, tasks: Sequence[str], kind: str, n_boot: int = 1000,
              level: float = 0.95, seed: int | None = 0) -> dict[str, Interval]:
    """{"average", "last", "bwt", "worst_drop": Interval} of one kind (formulas in the module
    docstring). Each replicate draws seeds, then entities within each task's side, then
    questions, once, and recomputes the whole X-UY matrix from that draw, so the intervals
    account for cells sharing items. bwt and worst_drop are None for a one-task sequence."""
    _check(n_boot, level)
    tasks, role = _order(tasks), _role(kind)
    n = len(tasks)
    pos = {t: i for i, t in enumerate(tasks)}
    part = evaluations[(evaluations["role"] == role) & evaluations["task"].isin(tasks)
                       & evaluations["unlearned"].isin(tasks)]
    x_pos = part["task"].map(pos).to_numpy(dtype=np.int64)
    y_pos = part["unlearned"].map(pos).to_numpy(dtype=np.int64)
    part = _judged_rows(part[x_pos <= y_pos])
    if part.empty:
        return {name: _NONE for name in SUMMARIES}
    x_pos = part["task"].map(pos).to_numpy(dtype=np.int64)
    y_pos = part["unlearned"].map(pos).to_numpy(dtype=np.int64)
    design = _design(part, ["task"], x_pos * n + y_pos, n * n)  # slot: the cell (x, y), flattened

    def matrices(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / (MAX_SCORE * den), np.nan).reshape(-1, n, n)

    observed = _summarise(matrices(design.sums.sum(axis=(0, 2))[None], design.counts.sum(axis=(0, 2))[None]))
    boot = _summarise(_replicates(design, int(n_boot), _rng(seed, "summaries", kind)).reshape(-1, n, n))

    # clusters each summary rests on: those of the tasks it reads
    strata_tasks = sorted(set(part["task"]))  # stratum codes follow the sorted task values
    per_task = {t: int((design.cluster_stratum == i).sum()) for i, t in enumerate(strata_tasks)}
    reads = {"average": tasks, "last": tasks[-1:], "bwt": tasks[:-1], "worst_drop": tasks[:-1]}
    out = {}
    for name in SUMMARIES:
        value = _opt(observed[name][0])
        if value is None:
            out[name] = _NONE
            continue
        low, high = _percentiles(boot[name][:, None], level)
        out[name] = Interval(value, _opt(low[0]), _opt(high[0]), sum(per_task.get(t, 0) for t in reads[name]))
    return out
