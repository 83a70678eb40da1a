"""The statistics core on real numbers: coverage of the cluster bootstrap under a known
data-generating process, why clusters and seeds widen the interval, determinism, missing
scores, the continual-learning summaries against their formulas, and the edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlu_training.stats import Interval, cell_intervals, item_bootstrap_ci, score_ci, summaries

# -- simulated data ---------------------------------------------------------------------------

N_ENTITIES, N_QUESTIONS, N_PHRASINGS = 30, 5, 5
MU, SD_ENTITY, SD_QUESTION = 0.3, 0.8, 0.8


def expit(z):
    return 1 / (1 + np.exp(-z))


def true_ratio() -> float:
    """E[score] / 2 = E[p] = E[expit(MU + Z)], Z ~ N(0, SD_ENTITY² + SD_QUESTION²), by
    Gauss-Hermite quadrature (every question has the same number of phrasings, nothing missing,
    so the population ratio is the mean question probability)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    sd = np.hypot(SD_ENTITY, SD_QUESTION)
    return float((weights * expit(MU + sd * nodes)).sum() / weights.sum())


def frame_of(scores: np.ndarray, **extra) -> pd.DataFrame:
    """scores (entities, questions, phrasings) as evaluation rows."""
    e, q, v = np.meshgrid(*(np.arange(n) for n in scores.shape), indexing="ij")
    return pd.DataFrame({"entity_id": [f"e{i}" for i in e.ravel()], "qa_id": np.arange(scores.size),
                         "variant": v.ravel(), "answer": [f"answer {i}-{j}" for i, j in zip(e.ravel(), q.ravel())],
                         "score": pd.array(scores.ravel(), dtype="Int64"), **extra})


def simulate(rng: np.random.Generator) -> pd.DataFrame:
    a = rng.normal(0, SD_ENTITY, (N_ENTITIES, 1, 1))
    b = rng.normal(0, SD_QUESTION, (N_ENTITIES, N_QUESTIONS, 1))
    p = np.broadcast_to(expit(MU + a + b), (N_ENTITIES, N_QUESTIONS, N_PHRASINGS))
    return frame_of(rng.binomial(2, p))


def test_the_truth_is_what_a_huge_sample_gives():
    assert len(simulate(np.random.default_rng(7))) == N_ENTITIES * N_QUESTIONS * N_PHRASINGS
    rng = np.random.default_rng(8)
    z = rng.normal(MU, np.hypot(SD_ENTITY, SD_QUESTION), 2_000_000)
    assert true_ratio() == pytest.approx(expit(z).mean(), abs=2e-3)


def test_the_cluster_interval_covers_the_truth_at_about_its_level():
    truth, rng = true_ratio(), np.random.default_rng(2024)
    samples = 300
    covered, cluster_w, item_w = 0, [], []
    for i in range(samples):
        frame = simulate(rng)
        ci = score_ci(frame, n_boot=300, seed=i)
        covered += ci.low <= truth <= ci.high
        cluster_w.append(ci.high - ci.low)
        if i < 50:
            naive = item_bootstrap_ci(frame, n_boot=300, seed=i)
            item_w.append(naive.high - naive.low)
    rate = covered / samples
    print(f"coverage {rate:.3f} over {samples} samples; width cluster/item "
          f"{np.mean(cluster_w[:50]) / np.mean(item_w):.2f}")
    assert 0.88 <= rate <= 0.99
    assert np.mean(cluster_w[:50]) > 1.5 * np.mean(item_w)  # rows are far from independent here


def test_clusters_of_phrasings_that_share_their_score_widen_the_interval():
    rng = np.random.default_rng(3)
    per_question = rng.integers(0, 3, (4, 6, 1))  # every phrasing of a question gets its score
    frame = frame_of(np.repeat(per_question, 5, axis=2))
    cluster, item = score_ci(frame, seed=1), item_bootstrap_ci(frame, seed=1)
    assert cluster.value == item.value
    assert cluster.n_clusters == 24 and item.n_clusters == 120
    ratio = (cluster.high - cluster.low) / (item.high - item.low)
    print(f"width cluster/item with shared scores: {ratio:.2f}")
    assert ratio >= 1.5


def test_seeds_that_differ_widen_the_interval():
    rng = np.random.default_rng(4)
    p = expit(rng.normal(0, 1, (6, 5, 1)) + np.zeros((1, 1, 5)))
    frames = [frame_of(rng.binomial(2, expit(np.log(p / (1 - p)) + shift)), seed=s)
              for s, shift in enumerate((-1.5, 0.0, 1.5))]  # each training seed a different model
    pooled = pd.concat(frames, ignore_index=True)
    with_seeds = score_ci(pooled, seed=5)
    as_one = score_ci(pooled.drop(columns="seed"), seed=5)
    assert with_seeds.value == as_one.value
    assert (with_seeds.high - with_seeds.low) > 1.3 * (as_one.high - as_one.low)
    one_seed = score_ci(frames[0], seed=5)  # a seed column with one value: no seed level
    assert one_seed == score_ci(frames[0].drop(columns="seed"), seed=5)


def test_base_model_seeds_are_resampled_before_their_sequence_seeds():
    """Two base models (taught with different seeds) that know different things, three unlearning
    seeds on each that hardly differ: drawing the base seeds first sees two units, not six."""
    rng = np.random.default_rng(6)
    p = expit(rng.normal(0, 1, (6, 5, 1)) + np.zeros((1, 1, 5)))
    frames = [frame_of(rng.binomial(2, expit(np.log(p / (1 - p)) + shift)), seed=s).assign(base_seed=b)
              for b, shift in enumerate((-1.5, 1.5)) for s in range(3)]
    pooled = pd.concat(frames, ignore_index=True)
    nested = score_ci(pooled, seed=5)
    flat = score_ci(pooled.assign(seed=pooled["base_seed"] * 10 + pooled["seed"]).drop(columns="base_seed"), seed=5)
    assert nested.value == flat.value
    assert (nested.high - nested.low) > 1.2 * (flat.high - flat.low)
    one_base = pd.concat(frames[:3], ignore_index=True)  # one base seed: the seeds drawn exactly as without it
    assert score_ci(one_base, seed=5) == score_ci(one_base.drop(columns="base_seed"), seed=5)


def test_same_seed_same_interval_and_missing_scores_are_left_out():
    frame = simulate(np.random.default_rng(5))
    assert score_ci(frame, n_boot=400, seed=11) == score_ci(frame, n_boot=400, seed=11)
    assert score_ci(frame, n_boot=400, seed=11) != score_ci(frame, n_boot=400, seed=12)
    holes = frame.copy()
    gone = np.random.default_rng(6).random(len(frame)) < 0.2
    holes.loc[gone, "score"] = pd.NA
    without = frame[~gone]
    with_na = score_ci(holes, n_boot=400, seed=11)
    assert with_na.value == pytest.approx(without["score"].sum() / (2 * len(without)))
    assert with_na.value != score_ci(holes.fillna({"score": 0}), seed=11).value  # NA is not 0
    assert with_na == score_ci(without, n_boot=400, seed=11)  # exactly as if the rows were absent


def test_one_entity_varies_only_its_questions_and_one_cluster_collapses():
    one_entity = frame_of(np.repeat(np.array([[[0], [2], [1], [2], [0], [2]]]), 3, axis=2))
    ci = score_ci(one_entity)
    assert ci.n_clusters == 6 and ci.value == pytest.approx(7 / 12)
    assert 0 <= ci.low < ci.value < ci.high <= 1
    single = frame_of(np.array([[[2, 1, 0, 2]]]))
    assert score_ci(single) == Interval(5 / 8, 5 / 8, 5 / 8, 1)
    two_entities_one_question_each = frame_of(np.array([[[2, 2]], [[2, 2]]]))
    assert score_ci(two_entities_one_question_each) == Interval(1.0, 1.0, 1.0, 2)


def test_nothing_judged_gives_none():
    frame = frame_of(np.zeros((2, 3, 2), dtype=int))
    frame["score"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    assert score_ci(frame) == Interval(None, None, None, 0)
    assert item_bootstrap_ci(frame) == Interval(None, None, None, 0)
    assert score_ci(frame.iloc[:0]) == Interval(None, None, None, 0)


# -- the matrix and the summaries -------------------------------------------------------------

TASKS = ["A", "B", "C"]


def evaluations(score_of, tasks=TASKS, entities=2, questions=3, phrasings=2, seeds=None) -> pd.DataFrame:
    """Every item of every task judged after every step; score_of(y, x, role, entity, question,
    phrasing[, seed]) gives the score (None: missing)."""
    rows = []
    for step, y in enumerate(tasks):
        for x in tasks:
            for role in ("forget", "retain"):
                for e in range(entities):
                    for q in range(questions):
                        for v in range(phrasings):
                            for s in (seeds or [None]):
                                args = (y, x, role, e, q, v) + ((s,) if seeds else ())
                                row = {"unlearned": y, "step": step, "task": x, "role": role,
                                       "entity_id": f"{x}-{role}-{e}", "qa_id": f"{x}{role}{e}{q}{v}",
                                       "variant": v, "question": f"question {q} v{v}", "answer": f"answer {q}",
                                       "score": score_of(*args)}
                                if seeds:
                                    row["seed"] = s
                                rows.append(row)
    frame = pd.DataFrame(rows)
    frame["score"] = pd.array(frame["score"], dtype="Int64")
    return frame


def plain_cells(frame: pd.DataFrame, role: str) -> dict[tuple[str, str], float]:
    """The X-UY matrix the simple way: Σ score / (2 n judged) per (task, unlearned)."""
    part = frame[(frame["role"] == role) & frame["score"].notna()]
    return {(x, y): g["score"].sum() / (2 * len(g)) for (x, y), g in part.groupby(["task", "unlearned"])}


def structured(y, x, role, e, q, v):
    """Forget scores that rise when a task is unlearned and fade for earlier tasks, with spread
    between entities and questions; retain scores that erode slowly."""
    sy, sx = TASKS.index(y), TASKS.index(x)
    if role == "retain":
        return 2 if (e + q + v + sy) % 5 else 1
    if sx > sy:
        return 0
    base = {0: 2, 1: 1, 2: 0}[sy - sx]  # right after: 2, one step later: 1, two: 0
    return min(2, base + (e == 1 and q == 0)) if (q, v) != (2, 1) else None


def test_cell_intervals_cover_every_existing_cell_with_the_plain_values():
    frame = evaluations(structured)
    cells = cell_intervals(frame, TASKS, "forget_quality", n_boot=300, seed=3)
    assert list(cells) == [("A", "A"), ("A", "B"), ("B", "B"), ("A", "C"), ("B", "C"), ("C", "C")]
    plain = plain_cells(frame, "forget")
    for key, ci in cells.items():
        assert ci.value == pytest.approx(plain[key], abs=1e-12)
        assert ci.low <= ci.value <= ci.high and ci.n_clusters == 6
    assert cells == cell_intervals(frame, TASKS, "forget_quality", n_boot=300, seed=3)
    utility = cell_intervals(frame, TASKS, "utility", n_boot=300, seed=3)
    assert utility[("C", "C")].value == pytest.approx(plain_cells(frame, "retain")[("C", "C")], abs=1e-12)
    # identical data in two cells, different streams: the draws are not shared
    same = evaluations(lambda y, x, role, e, q, v: (e + 2 * q + v) % 3, entities=4, questions=5)
    twin = cell_intervals(same, TASKS, "utility", n_boot=200, seed=0)
    assert twin[("A", "A")].value == twin[("B", "C")].value
    assert (twin[("A", "A")].low, twin[("A", "A")].high) != (twin[("B", "C")].low, twin[("B", "C")].high)
    with pytest.raises(ValueError):
        cell_intervals(frame, TASKS, "rouge", n_boot=10)


def test_summaries_are_the_formulas_on_the_matrix():
    frame = evaluations(structured)
    p = plain_cells(frame, "forget")
    got = summaries(frame, TASKS, "forget_quality", n_boot=500, seed=1)
    expected = {
        "average": np.mean([p[(t, "C")] for t in TASKS]),
        "last": p[("C", "C")],
        "bwt": np.mean([p[(t, "C")] - p[(t, t)] for t in ("A", "B")]),
        "worst_drop": max(p[(t, t)] - p[(t, "C")] for t in ("A", "B")),
    }
    for name, value in expected.items():
        assert got[name].value == pytest.approx(value, abs=1e-12), name
        assert got[name].low <= got[name].value <= got[name].high, name
    # by hand: 10 judged forget items per task and cell (q2/v1 missing), e1/q0 one point higher
    assert p[("A", "A")] == p[("B", "B")] == p[("C", "C")] == 1.0
    assert p[("A", "B")] == pytest.approx(12 / 20) and p[("B", "C")] == pytest.approx(12 / 20)
    assert p[("A", "C")] == pytest.approx(2 / 20)
    assert got["average"].value == pytest.approx((2 / 20 + 12 / 20 + 1) / 3)
    assert got["worst_drop"].value == pytest.approx(18 / 20)
    assert got["bwt"].value == pytest.approx(((2 - 20) + (12 - 20)) / 2 / 20)
    assert got["average"].n_clusters == 18 and got["last"].n_clusters == 6 and got["bwt"].n_clusters == 12
    assert got == summaries(frame, TASKS, "forget_quality", n_boot=500, seed=1)


def test_summaries_resample_the_same_items_across_steps():
    """A task whose every item scores the same after it was unlearned and at the end has a bwt
    term of exactly 0 in every replicate: cells are recomputed from one draw, not drawn apart."""
    def unchanged(y, x, role, e, q, v):
        return (3 * e + q + v) % 3 if TASKS.index(x) <= TASKS.index(y) else None

    frame = evaluations(unchanged, entities=3, questions=4)
    got = summaries(frame, TASKS, "utility", n_boot=300, seed=2)
    assert got["bwt"] == Interval(0.0, 0.0, 0.0, 24) and got["worst_drop"] == Interval(0.0, 0.0, 0.0, 24)
    assert got["average"].low < got["average"].value < got["average"].high  # the level itself varies
    # drawn apart, the two cells of a task would disagree in most replicates
    cells = cell_intervals(frame, TASKS, "utility", n_boot=300, seed=2)
    assert cells[("A", "A")].high - cells[("A", "A")].low > 0.1


def test_summaries_of_one_task_and_of_nothing():
    frame = evaluations(structured, tasks=["A"])
    got = summaries(frame, ["A"], "forget_quality", n_boot=200)
    assert got["bwt"] == Interval(None, None, None, 0) and got["worst_drop"] == Interval(None, None, None, 0)
    assert got["average"] == got["last"]
    assert got["last"].value == pytest.approx(plain_cells(frame, "forget")[("A", "A")])
    empty = evaluations(lambda *a: None)
    assert all(ci == Interval(None, None, None, 0) for ci in summaries(empty, TASKS, "utility", n_boot=50).values())
    assert all(ci.value is None for ci in cell_intervals(empty, TASKS, "utility", n_boot=50).values())


def test_seeds_in_the_summaries():
    def by_seed(y, x, role, e, q, v, s):
        return structured(y, x, role, e, q, v) if s == 0 else max(0, (structured(y, x, role, e, q, v) or 0) - s)

    frame = evaluations(by_seed, seeds=[0, 1])
    both = summaries(frame, TASKS, "forget_quality", n_boot=400, seed=0)
    pooled = summaries(frame.drop(columns="seed"), TASKS, "forget_quality", n_boot=400, seed=0)
    for name in ("average", "last"):
        assert both[name].value == pooled[name].value
        assert both[name].high - both[name].low > pooled[name].high - pooled[name].low
