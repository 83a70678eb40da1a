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

from ..benchmark import cap_images_per_entity, held_out_train
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


def build_splits(qa: pd.DataFrame, catalog: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    entities = set(select_entities(catalog, profile)["entity_id"])
    mine = qa[qa["entity_id"].isin(entities)]
    evaluation = mine[mine["split"] == "eval"]
    train = cap_images_per_entity(held_out_train(mine), profile.max_train_images_per_entity)
    out = pd.concat([train, evaluation]).sort_values(["task", "role", "split", "entity_id", "qa_id"])
    return out.reset_index(drop=True)


def splits_digest(splits: pd.DataFrame) -> str:
    """Content digest of a selection: changes whenever a row or its answer changes."""
    h = hashlib.sha256()
    for row in splits[["qa_id", "answer"]].sort_values("qa_id").itertuples(index=False):
        h.update(f"{row.qa_id}\t{row.answer}\n".encode())
    return h.hexdigest()


def data_digest(splits: pd.DataFrame, crawls: pd.DataFrame) -> str:
    """What a base model is trained and evaluated on: the profile's rows and answers
    (`splits_digest`) and the bytes of every picture of the run (raw_crawls' sha256, the declining
    pool's too). Renders and the official photographs under one image path are other data: with
    `MLU_IMAGES_DIR` switched, the tiny model, its filter's answers and every sequence are made
    again instead of read back."""
    h = hashlib.sha256(splits_digest(splits).encode())
    for image, sha in sorted(zip(crawls["image"], crawls["sha256"])):
        h.update(f"{image}\t{sha}\n".encode())
    return h.hexdigest()


def split_counts(splits: pd.DataFrame) -> pd.DataFrame:
    """Rows per task, role and split, with the entity counts: what the UI shows."""
    g = splits.groupby(["task", "role", "split"])
    return pd.DataFrame({"rows": g.size(), "entities": g["entity_id"].nunique()}).reset_index()


def log_splits(store, splits: pd.DataFrame, profile: Profile, digest: str, release_digest: str) -> str:
    """One MLflow run that records the profile's train and eval sets as datasets; returns its id."""
    import mlflow

    tags = {"mlu.kind": "benchmark_splits", "mlu.profile": profile.name, "mlu.data_digest": digest}
    with store.start_run(f"benchmark_splits-{profile.name}", tags) as run:
        mlflow.log_params({f"profile.{k}": v for k, v in profile.as_dict().items()} | {"release_digest": release_digest})
        for split in ("train", "eval"):
            part = splits[splits["split"] == split].reset_index(drop=True)
            dataset = mlflow.data.from_pandas(part, name=f"mlubench-{profile.name}-{split}", digest=f"{digest[:8]}-{split}")
            mlflow.log_input(dataset, context=split)
            mlflow.log_metric(f"rows/{split}", len(part))
        return run.info.run_id
