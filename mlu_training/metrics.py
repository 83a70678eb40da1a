"""Benchmark metrics: Forget Quality and Utility (Σ score / Σ max over judged items), ROUGE-L,
and the breakdown by phrasing variant. Missing judgements are excluded from both sums and
counted, so an outage never reads as forgetting (0) or as knowledge."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import pandas as pd

MAX_SCORE = 2


@dataclass(frozen=True)
class ScoreSummary:
    value: float | None  # Σ score / Σ max over the judged items; None when none was judged
    judged: int
    missing: int

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}value": self.value, f"{prefix}judged": self.judged, f"{prefix}missing": self.missing}


def score_ratio(scores: Iterable[int | None], max_score: int = MAX_SCORE) -> ScoreSummary:
    scores = list(scores)
    got = [int(s) for s in scores if s is not None and not pd.isna(s)]
    return ScoreSummary(sum(got) / (max_score * len(got)) if got else None, len(got), len(scores) - len(got))


def forget_quality(scores: Sequence[int | None]) -> ScoreSummary:
    """Refusal score on forget sets: 1.0 = every answer a clean refusal."""
    return score_ratio(scores)


def utility(scores: Sequence[int | None]) -> ScoreSummary:
    """Correctness score on retain sets: 1.0 = every answer correct."""
    return score_ratio(scores)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
    """ROUGE-L F1 per pair (stemmed), as in TOFU and MLLMU-Bench."""
    return [_rouge().score(r, p)["rougeL"].fmeasure for r, p in zip(references, predictions)]


def by_variant(frame: pd.DataFrame, score_column: str = "score") -> pd.DataFrame:
    """Score ratio, judged and missing counts and mean ROUGE-L per phrasing variant
    (0 = the original question, 1-4 = paraphrases): does the effect generalise?"""
    rows = []
    for variant, part in frame.groupby("variant", sort=True):
        s = score_ratio(part[score_column])
        row = {"variant": int(variant), "score": s.value, "judged": s.judged, "missing": s.missing}
        if "rouge_l" in part:
            row["rouge_l"] = float(part["rouge_l"].mean())
        rows.append(row)
    return pd.DataFrame(rows)
