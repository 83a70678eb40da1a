"""How far the offline judge agrees with an API judge, on the answers of a finished sequence.

`judge_both` scores every answer with both judges (the offline one's rule is kept);
`agreement_table` reports, per category (the item's role x the offline rule that decided), how
many answers there are, how many the API judge left missing, exact agreement, agreement within
one point, Cohen's kappa, and the mean score each judge gives, with an "all" row per role and
one overall. Missing API judgements are counted, never compared.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from .base import FORGET, RETAIN, Judge, JudgeItem

# The offline rules' reasons begin with one of these (local.py); the longest match names the rule.
RULE_FAMILIES = (
    "clean refusal", "refusal that leaks", "refusal, degenerate", "not a refusal",
    "correct words, degenerate", "correct", "partly correct", "refuses, partly correct", "refusal",
    "wrong: about another entity", "wrong: negates", "wrong: answers", "wrong date", "partly correct, but wrong date",
    "wrong", "incorrect", "gibberish",
)


def rule_family(reason: str | None) -> str:
    if not reason:
        return "unknown"
    matches = [f for f in RULE_FAMILIES if reason.startswith(f)]
    return max(matches, key=len) if matches else reason.split(" (")[0][:40]


def judge_both(evaluations: pd.DataFrame, offline: Judge, api: Judge) -> pd.DataFrame:
    """evaluations: one row per answer with role (forget|retain), entity, question, answer (the
    ground truth) and response. Adds offline, offline_rule, api (Int64, <NA> when missing) and
    api_reason."""
    out = evaluations.reset_index(drop=True).copy()
    out["offline"] = pd.array([None] * len(out), dtype="Int64")
    out["api"] = pd.array([None] * len(out), dtype="Int64")
    out["offline_rule"] = None
    out["api_reason"] = None
    for role in (FORGET, RETAIN):
        mask = out["role"] == role
        if not mask.any():
            continue
        rows = out[mask]
        items = [JudgeItem(str(s), str(q), str(gt), "" if r is None else str(r)) for s, q, gt, r in
                 zip(rows["entity"], rows["question"], rows["answer"], rows["response"])]
        mine, theirs = offline.score_batch(role, items), api.score_batch(role, items)
        out.loc[mask, "offline"] = pd.array([j.score for j in mine], dtype="Int64")
        out.loc[mask, "offline_rule"] = [rule_family(j.reason) for j in mine]
        out.loc[mask, "api"] = pd.array([j.score for j in theirs], dtype="Int64")
        out.loc[mask, "api_reason"] = [j.reason if j.missing else None for j in theirs]
    return out


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Cohen's kappa of two raters on the same items (None when undefined: no items, or both
    give one single score to everything)."""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    labels = set(a) | set(b)
    expected = sum((list(a).count(k) / n) * (list(b).count(k) / n) for k in labels)
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1 - expected)


def _row(role: str, category: str, frame: pd.DataFrame, offline: str, api: str) -> dict:
    judged = frame[frame[api].notna() & frame[offline].notna()]
    a, b = judged[offline].astype(int).tolist(), judged[api].astype(int).tolist()
    n = len(judged)
    kappa = cohen_kappa(a, b)
    return {
        "role": role, "category": category, "answers": len(frame), "missing": len(frame) - n,
        "agree": round(sum(x == y for x, y in zip(a, b)) / n, 3) if n else None,
        "within_1": round(sum(abs(x - y) <= 1 for x, y in zip(a, b)) / n, 3) if n else None,
        "kappa": None if kappa is None else round(kappa, 3),
        "offline_mean": round(sum(a) / n / 2, 3) if n else None,
        "api_mean": round(sum(b) / n / 2, 3) if n else None,
    }


def agreement_table(evaluations: pd.DataFrame, offline: str = "offline", api: str = "api",
                    category: str = "offline_rule") -> pd.DataFrame:
    """Per (role, category) rows, an "all" row per role, and an overall row (role "all").
    Scores are 0..2; the means are on the 0..1 scale of the metrics."""
    rows = []
    for role, per_role in evaluations.groupby("role", sort=True):
        for cat, frame in per_role.groupby(category, sort=True):
            rows.append(_row(role, cat, frame, offline, api))
        rows.append(_row(role, "all", per_role, offline, api))
    rows.append(_row("all", "all", evaluations, offline, api))
    return pd.DataFrame(rows)
