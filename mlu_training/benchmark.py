"""The benchmark's facts, defined once: its tasks, the two roles of an entity, its nine classes,
and the one rule that caps how many pictures of an entity are used for training.

Everything else (the release reader, the splits, the protocol, LUMoE's requests, the CLI)
imports these names instead of spelling them again.
"""

from __future__ import annotations

import hashlib

import pandas as pd

TASKS = ("A", "B", "C", "D")  # the benchmark's four requests, in the paper's order
DEFAULT_ORDER = "".join(TASKS)
FORGET, RETAIN = "forget", "retain"
ROLES = (FORGET, RETAIN)
# The two scores of the tracking contract, and the role of the items each is computed over:
# forget quality (the refusal score) on forget items, utility (correctness) on retain items.
SCORE_ROLE = {"forget_quality": FORGET, "utility": RETAIN}
KINDS = tuple(SCORE_ROLE)
# The class folder names exactly as the image paths spell them.
CLASSES = ("Animals", "Astronomy", "Buildings", "Cartoon", "Corporation", "Movies",
           "Personage", "Plants", "TV series")


def held_out_train(rows):
    """The train rows minus every (image, question) that an evaluation row among `rows` asks, so
    that evaluation always measures held-out pairs: for the base model, for forgetting and for
    utility alike (used for the profile's splits and for an unlearning request's rows)."""
    evaluation = rows[rows["split"] == "eval"]
    asked = set(zip(evaluation["image"], evaluation["question"]))
    train = rows[rows["split"] == "train"]
    keep = [pair not in asked for pair in zip(train["image"], train["question"])]
    return train[pd.Series(keep, index=train.index, dtype=bool)]  # a Series: an empty list would select columns


def _stable_rank(image: str) -> str:
    return hashlib.sha256(image.encode()).hexdigest()


def cap_images_per_entity(rows, max_images: int | None):
    """The rows of at most `max_images` distinct images per entity. Which images: the first by
    the sha256 of their path, so the choice is seeded by content, not by how paths sort, and is
    the same wherever the cap is applied (the profile's splits, an unlearning request's rows)."""
    if max_images is None:
        return rows
    keep: set[str] = set()
    for _, images in rows.groupby("entity_id")["image"]:
        keep.update(sorted(set(images), key=_stable_rank)[:max_images])
    return rows[rows["image"].isin(keep)]
