"""What a router says about a query: the expert (a registered request) to mount, or None for
the untouched base model. Utility first: when unsure, None."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd


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
