"""What an instruction-tuned MLLM knows and the tiny model must be taught: to decline questions
about entities it was never taught ("I'm not sure who this is."), instead of naming whoever it
knows best. Without it, gradient ascent can only take the model from knowing to gibberish, and a
refusal-based forget quality is 0 for every ascent method (the first wave's finding).

The pool comes from the release itself: the entities outside the profile. A seeded quarter of
them is never taught (calibration: does the model decline entities it has never seen?); a few
are taught with their true answers, as the profile's are (known distractors: entities the model
knows that are in no task, which LUMoE's router must leave to the base model); each of the others
gets IMAGES_PER_ENTITY pictures, each asked one of its class's questions, answered by one of
DECLINE_PHRASINGS (natural, varied, none of them the exact refusal that `idk`, `po` and LUMoE train
towards, so no method is scored by string identity; the judge recognises every one, a test checks
it).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import pandas as pd

from ..benchmark import cap_images_per_entity, held_out_train
from ..texts import REFUSAL_ANSWER

DECLINE_PHRASINGS = (
    "I'm not sure who this is.",
    "I'm not sure what this is.",
    "I can't identify what is shown here.",
    "I don't recognize this.",
    "I have no information about this.",
    "I'm not familiar with this.",
)
assert REFUSAL_ANSWER not in DECLINE_PHRASINGS
UNSEEN_SHARE = 0.25  # of the entities outside the profile: never taught, kept to measure calibration
IMAGES_PER_ENTITY = 4
# Known distractors: one for every four entities of the profile (mini: 4), at least two, so that
# one half calibrates the router and the other is audited; at most a quarter of the entities that
# are not kept unseen, so that enough are left to teach declining (research: 8 of 35).
DISTRACTORS_PER_PROFILE_ENTITY = 0.25
MAX_DISTRACTOR_SHARE = 0.25
MIN_DISTRACTORS = 2
CALIBRATING, AUDITED = 0, 1  # the halves of the distractors and of the never-seen entities


def _halves(entities, half: int) -> set[str]:
    """Half of `entities`: ordered by a digest of each id (stable whatever else is in the pool),
    every other one, so neither half is empty when there are two or more."""
    ranked = sorted(set(entities), key=lambda e: hashlib.sha256(e.encode()).hexdigest())
    return set(ranked[half::2])


@dataclass(frozen=True)
class UnknownPool:
    """The entities outside the profile, and what the base model is taught of them."""

    taught: pd.DataFrame  # image, question, answer (a decline phrasing), entity_id: taught with the benchmark
    unseen: pd.DataFrame  # evaluation items of entities never taught: the model should decline them
    # Known distractors: their train pairs (image, question, answer, entity_id), taught with their
    # true answers, and their evaluation items (held-out pictures and phrasings).
    known: pd.DataFrame
    known_eval: pd.DataFrame

    def training_pairs(self) -> pd.DataFrame:
        """What the base model is taught beside the profile: the declines and the known distractors."""
        columns = ["image", "question", "answer"]
        return pd.concat([self.taught[columns], self.known[columns]], ignore_index=True)

    def digest(self) -> str:
        pairs = self.training_pairs()
        rows = sorted(zip(pairs["image"], pairs["question"], pairs["answer"]))
        return hashlib.sha256(repr(rows).encode()).hexdigest()

    def known_half(self, half: int) -> pd.DataFrame:
        """The known distractors' evaluation items, in two halves by entity: CALIBRATING (the
        router's threshold, `distractor_images`) and AUDITED (is it left to the base model?)."""
        return self.known_eval[self.known_eval["entity_id"].isin(_halves(self.known_eval["entity_id"], half))]

    def unseen_half(self, half: int) -> pd.DataFrame:
        """The never-seen entities' items in two halves by entity: CALIBRATING (`distractor_images`)
        and AUDITED (how often the router sends a never-seen entity to an expert)."""
        return self.unseen[self.unseen["entity_id"].isin(_halves(self.unseen["entity_id"], half))]

    def distractor_images(self) -> list[str]:
        """Images the router must send to the base model, to calibrate it with (none of them of a
        forgotten or retained entity): the calibrating half of the known distractors' held-out
        pictures, the entities the model was taught to decline, and the calibrating half of the
        never-seen."""
        return sorted(set(self.known_half(CALIBRATING)["image"]) | set(self.taught["image"])
                      | set(self.unseen_half(CALIBRATING)["image"]))


def _pick(options, *key) -> str:
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return options[int.from_bytes(digest[:4], "little") % len(options)]


def unknown_pool(qa: pd.DataFrame, profile_entities: set[str], seed: int = 0, max_taught: int | None = None) -> UnknownPool:
    """The entities of `qa` (the release's QA table) outside the profile: a quarter never seen, a
    few known distractors (every train pair of IMAGES_PER_ENTITY pictures, true answers), the rest
    taught to be declined (one question per picture, IMAGES_PER_ENTITY pictures). At most
    `max_taught` refusals are taught (a seeded choice): declining must not outweigh knowing, or the
    model learns to decline everything (a small profile has few known pairs)."""
    others = sorted(set(qa["entity_id"]) - set(profile_entities))
    random.Random(f"{seed}-unknown-entities").shuffle(others)
    n_unseen = round(len(others) * UNSEEN_SHARE)
    wanted = max(MIN_DISTRACTORS, round(len(profile_entities) * DISTRACTORS_PER_PROFILE_ENTITY))
    n_known = min(wanted, max(MIN_DISTRACTORS, int((len(others) - n_unseen) * MAX_DISTRACTOR_SHARE)), len(others) - n_unseen)
    unseen_entities = set(others[:n_unseen])
    known_entities = set(others[n_unseen:n_unseen + n_known])
    taught_entities = set(others[n_unseen + n_known:])
    mine = qa[qa["entity_id"].isin(known_entities)]
    known = cap_images_per_entity(held_out_train(mine), IMAGES_PER_ENTITY).sort_values(["entity_id", "image", "question"])
    rows = cap_images_per_entity(held_out_train(qa[qa["entity_id"].isin(taught_entities)]), IMAGES_PER_ENTITY)
    rows = rows.sort_values(["entity_id", "image", "question"])
    one_per_image = rows.groupby("image", sort=False).apply(
        lambda g: g.iloc[[int(hashlib.sha256(f"{seed}{g.name}".encode()).hexdigest(), 16) % len(g)]],
        include_groups=False).reset_index(level=0)
    taught = one_per_image[["image", "question", "entity_id"]].assign(
        answer=[_pick(DECLINE_PHRASINGS, seed, img, q) for img, q in zip(one_per_image["image"], one_per_image["question"])])
    if max_taught is not None and len(taught) > max_taught:
        ranked = sorted(range(len(taught)), key=lambda i: hashlib.sha256(f"{seed}{taught['image'].iloc[i]}".encode()).hexdigest())
        taught = taught.iloc[sorted(ranked[:max_taught])]
    unseen = qa[(qa["split"] == "eval") & qa["entity_id"].isin(unseen_entities)]
    return UnknownPool(taught.reset_index(drop=True), unseen.reset_index(drop=True),
                       known[["image", "question", "answer", "entity_id"]].reset_index(drop=True),
                       mine[mine["split"] == "eval"].reset_index(drop=True))


def declines_for(qa: pd.DataFrame, splits: pd.DataFrame, seed: int = 0) -> UnknownPool:
    """The pool the tiny base model of a profile is taught to decline: as many refusals at most as
    the profile has training pairs (the base model's and the gold model's recipe alike)."""
    return unknown_pool(qa, set(splits["entity_id"]), seed, max_taught=int((splits["split"] == "train").sum()))


def calibration(vlm, known: pd.DataFrame, unseen: pd.DataFrame, load_image, batch_size: int = 32,
                max_new_tokens: int = 48) -> dict[str, float]:
    """How often the model declines: on evaluation items of entities it was taught (should be
    rare: `refusal_known`, goal ≤ 0.05) and of entities it never saw (should be the rule:
    `refusal_unseen`, goal ≥ 0.9). Held-out pictures and phrasings only, refusals by meaning."""
    from ..evaluation import answer
    from ..judge.refusals import is_refusal

    out = {}
    for name, items in (("refusal_known", known), ("refusal_unseen", unseen)):
        if items.empty:
            continue
        responses = answer(vlm, items, load_image, batch_size, max_new_tokens)
        out[name] = round(sum(map(is_refusal, responses)) / len(responses), 4)
        out[f"{name}_items"] = len(responses)
    return out
