"""Membership inference: can an attacker tell the forget set from data the model never saw? Three
scores of each (image, question, answer), from the probabilities the model gives the answer's
tokens: the loss, min-k % probability (the mean log-probability of the k % least likely tokens,
Shi et al. 2024) and the zlib ratio (the loss over the answer's zlib-compressed length, Carlini et
al. 2021). Each is oriented so that higher means "more likely trained on"; the AUC of telling
members (forget items) from non-members (items of entities never trained on) is 0.5 when they are
indistinguishable, as after perfect unlearning, above when the forget set still stands out, and
below when unlearning overshot (the forget set now looks *less* familiar than the unseen: itself a
trace, the privacy leak the gold model's comparison measures).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd

MIA_SCORES = ("loss", "min_k", "zlib")


def mia_metric(score: str) -> str:
    """`mia/min_k/auc`."""
    return f"mia/{score}/auc"


def membership_scores(token_logprobs: Sequence[np.ndarray], answers: Sequence[str], min_k: float = 0.2) -> pd.DataFrame:
    """One row per item, a column per MIA score (higher: more likely a member)."""
    rows = []
    for logp, text in zip(token_logprobs, answers):
        logp = np.asarray(logp, dtype=np.float64)
        nll = float(-logp.mean())
        k = max(1, int(np.ceil(min_k * len(logp))))
        rows.append({"loss": -nll, "min_k": float(np.sort(logp)[:k].mean()),
                     "zlib": -nll / len(zlib.compress(text.encode("utf-8")))})
    return pd.DataFrame(rows, columns=list(MIA_SCORES))


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """P(score of a member > score of a non-member), ties counting half: the ROC AUC."""
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(members) + [0] * len(nonmembers)
    return float(roc_auc_score(labels, list(members) + list(nonmembers)))


def _cluster_counts(groups: Sequence[str], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot × items: how often each item is drawn when its groups (entities) are resampled with
    replacement (an item's weight is its group's draw count)."""
    codes, uniques = pd.factorize(pd.Series(list(groups)))
    drawn = rng.multinomial(len(uniques), np.full(len(uniques), 1.0 / len(uniques)), size=n_boot)
    return drawn[:, codes]


def auc_interval(members: Sequence[float], nonmembers: Sequence[float], n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, member_groups: Sequence[str] | None = None,
                 nonmember_groups: Sequence[str] | None = None) -> tuple[float, float]:
    """Percentile interval of the AUC when members and non-members are each resampled with
    replacement by group (their entity: the pairs of one entity are not independent; each item its
    own group when none is given). Every replicate is Σ w_m · wins · w_n / (Σ w_m · Σ w_n) over the
    pairs, so no pair is compared twice."""
    m, n = np.asarray(members, dtype=np.float64), np.asarray(nonmembers, dtype=np.float64)
    wins = (m[:, None] > n[None, :]) + 0.5 * (m[:, None] == n[None, :])  # the AUC is its mean
    rng = np.random.default_rng(seed)
    wm = _cluster_counts(member_groups if member_groups is not None else range(len(m)), n_boot, rng)
    wn = _cluster_counts(nonmember_groups if nonmember_groups is not None else range(len(n)), n_boot, rng)
    replicates = ((wm @ wins) * wn).sum(axis=1) / (wm.sum(axis=1) * wn.sum(axis=1))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def mia_aucs(served, members: pd.DataFrame, nonmembers: pd.DataFrame, load_image, min_k: float = 0.2,
             batch_size: int = 32, intervals: bool = False) -> dict[str, float]:
    """`mia/<score>/auc` for each score, of `served` (attacks.Served) telling members from non-members
    by their true answers; with `intervals`, their 95 % bounds too (`…/ci_low`, `…/ci_high`; a
    bootstrap over entities on both sides)."""
    from ..sequences import CI_LEVEL, N_BOOT, ci_high, ci_low

    scores = {}
    for name, items in (("members", members), ("nonmembers", nonmembers)):
        answers = items["answer"].tolist()
        scores[name] = membership_scores(served.token_logprobs(items, answers, load_image, batch_size), answers, min_k)
    out = {}
    for s in MIA_SCORES:
        member, nonmember = scores["members"][s], scores["nonmembers"][s]
        out[mia_metric(s)] = auc(member, nonmember)
        if intervals:
            out[ci_low(mia_metric(s))], out[ci_high(mia_metric(s))] = auc_interval(
                member, nonmember, N_BOOT, CI_LEVEL, member_groups=members["entity_id"].tolist(),
                nonmember_groups=nonmembers["entity_id"].tolist())
    return out


def membership_sets(train_items: pd.DataFrame, unseen: pd.DataFrame, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members, non-members): the task's forget training pairs (what the base model was trained
    on, then asked to forget), and the evaluation items, original phrasing, of entities never
    taught (models/declining.py's `unseen`)."""
    from ..benchmark import FORGET

    members = train_items[(train_items["task"] == task) & (train_items["role"] == FORGET)]
    nonmembers = unseen[unseen["variant"] == 0]
    if members.empty or nonmembers.empty:
        raise ValueError(f"membership inference needs both sets: {len(members)} members of task {task}, "
                         f"{len(nonmembers)} items of never-seen entities")
    return members.reset_index(drop=True), nonmembers.reset_index(drop=True)
