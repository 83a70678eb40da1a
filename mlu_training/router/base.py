"""What a router says about a query: the expert (a registered request) to mount, or None for
the untouched base model. Utility first: when unsure, None."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd

NAME_SCORE = 90.0  # the least fuzzy score (rapidfuzz ratio, 0-100) at which a window of words is a name
_WORD = re.compile(r"\w+")
# Scripts written without spaces between words: a name in them is found as a substring.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def name_score(name: str, text: str) -> float:
    """How well `name` occurs in `text` as whole words (0-100): 100 when its words appear in a
    row; otherwise the best fuzzy ratio against every window of as many whole words of the text
    (a typo, "Eifel Tower"). Never a part of a word: "cat" is not in "located" or "categorizes"
    (a partial ratio scored those 100). Names in a script without spaces (苏姿丰) are substrings."""
    if _UNSPACED.search(name):
        return 100.0 if name.casefold() in text.casefold() else 0.0
    from rapidfuzz import fuzz

    target, found = words(name), words(text)
    if not target:
        return 0.0
    joined, n, best = " ".join(target), len(target), 0.0
    for start in range(len(found) - n + 1):
        window = found[start:start + n]
        if window == target:
            return 100.0
        best = max(best, fuzz.ratio(joined, " ".join(window)))
    return best


def best_name(text: str, names: Iterable[tuple[str, str]], min_length: int = 3) -> tuple[str, str, float] | None:
    """(key, name, score) of the name that `text` contains best (≥ NAME_SCORE), of (key, name)
    pairs; ties go to the longer, more specific name. Names shorter than `min_length` are skipped."""
    best = None
    for key, name in names:
        if len(name) < min_length:
            continue
        score = name_score(name, text)
        if score >= NAME_SCORE and (best is None or (score, len(name)) > (best[2], len(best[1]))):
            best = (key, name, score)
    return best


@dataclass(frozen=True)
class Route:
    task: str | None  # the expert to mount; None = the base model
    entity: str | None  # the entity recognised, if any
    score: float  # the backend's confidence (similarity, fuzzy score…)
    reason: str


@dataclass(frozen=True)
class Registry:
    """What the router matches against: each registered request's forget entities, and every
    entity's names (display name and aliases) for matching text."""

    forget: dict[str, list[str]]  # task -> entity ids
    names: dict[str, list[str]]  # entity id -> names

    def task_of(self, entity_id: str | None) -> str | None:
        for task, entities in self.forget.items():
            if entity_id in entities:
                return task
        return None


def router_quality(routes: Sequence[Route], truth: Sequence[str | None], roles: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """Per task precision and recall, and how often a retain query is wrongly sent to an expert."""
    frame = pd.DataFrame({"route": [r.task for r in routes], "truth": list(truth), "role": list(roles)})
    rows = []
    for task in sorted({t for t in frame["truth"].dropna()} | {t for t in frame["route"].dropna()}):
        predicted, actual = frame["route"] == task, frame["truth"] == task
        hit = int((predicted & actual).sum())
        rows.append({"task": task, "precision": hit / predicted.sum() if predicted.sum() else None,
                     "recall": hit / actual.sum() if actual.sum() else None, "queries": int(actual.sum())})
    retain = frame[frame["role"] == "retain"]
    summary = {
        "accuracy": float((frame["route"].fillna("-") == frame["truth"].fillna("-")).mean()) if len(frame) else None,
        "retain_to_expert_rate": float(retain["route"].notna().mean()) if len(retain) else None,
        "forget_recall": float((frame.loc[frame["truth"].notna(), "route"] == frame.loc[frame["truth"].notna(), "truth"]).mean())
        if frame["truth"].notna().any() else None,
    }
    return pd.DataFrame(rows), summary
