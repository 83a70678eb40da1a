"""The profile's selection of the benchmark: per task, forget/retain x train/eval.

- eval: the release's evaluation items (variant 0) and their four paraphrases (variants 1-4).
- train: the task files' rows, minus every (image, question) asked in eval, so that evaluation
  always measures held-out pairs (unseen images or phrasings of a known entity), for the base
  model's knowledge, for forgetting and for utility alike.
"""

from __future__ import annotations

import hashlib
import random

import pandas as pd

from ..profiles import Profile


def select_entities(catalog: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """The profile's entities per task side: a seeded draw that spreads over classes."""
    if profile.entities_per_side is None:
        return catalog.copy()
    picked = []
    for (task, role), side in catalog.groupby(["task", "role"], sort=True):
        order = sorted(side["entity_id"])
        random.Random(f"{profile.seed}-{task}-{role}").shuffle(order)
        classes = dict(zip(side["entity_id"], side["class_name"]))
        chosen, seen = [], set()
        for ent in order:  # one entity per class first
            if classes[ent] not in seen:
                chosen.append(ent)
                seen.add(classes[ent])
        chosen += [e for e in order if e not in chosen]  # then the rest, in the same draw
        picked += chosen[: profile.entities_per_side]
    return catalog[catalog["entity_id"].isin(picked)].copy()


def _stable_rank(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def build_splits(qa: pd.DataFrame, catalog: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    entities = set(select_entities(catalog, profile)["entity_id"])
    mine = qa[qa["entity_id"].isin(entities)]
    evaluation = mine[mine["split"] == "eval"]
    asked = set(zip(evaluation["image"], evaluation["question"]))
    train = mine[(mine["split"] == "train")
                 & ~pd.Series(list(zip(mine["image"], mine["question"])), index=mine.index).isin(asked)]
    if profile.max_train_images_per_entity is not None:
        keep = set()
        for _, images in train.groupby("entity_id")["image"]:
            ranked = sorted(set(images), key=_stable_rank)
            keep.update(ranked[: profile.max_train_images_per_entity])
        train = train[train["image"].isin(keep)]
    out = pd.concat([train, evaluation]).sort_values(["task", "role", "split", "entity_id", "qa_id"])
    return out.reset_index(drop=True)


def splits_digest(splits: pd.DataFrame) -> str:
    """Content digest of a selection: changes whenever a row or its answer changes."""
    h = hashlib.sha256()
    for row in splits[["qa_id", "answer"]].sort_values("qa_id").itertuples(index=False):
        h.update(f"{row.qa_id}\t{row.answer}\n".encode())
    return h.hexdigest()


def split_counts(splits: pd.DataFrame) -> pd.DataFrame:
    """Rows per task, role and split, with the entity counts: what the UI shows."""
    g = splits.groupby(["task", "role", "split"])
    return pd.DataFrame({"rows": g.size(), "entities": g["entity_id"].nunique()}).reset_index()
