"""The gold model: the base model's own recipe trained without the forget entities of one task,
what perfect unlearning of that task would give (possible because mlu trains its base model).
Each method's final model is compared with it as open-unlearning and CLEAR do:

- `gold/ks_forget_quality`: the KS-test p-value between the truth-ratio distributions of the two
  models on the task's forget items (TOFU's forget quality: high = the unlearned model cannot be
  told from one that never learned). A truth ratio is the mean probability of wrong answers over
  the probability of the true one, per token (length-normalised, as TOFU): near 0 when the model
  knows the answer, near 1 when it cannot tell. The wrong answers are other entities' answers to
  the same class question (the release has no options), a seeded choice.
- `gold/privleak`: (AUC_model − AUC_gold) / AUC_gold × 100 for membership inference (mia.py), as
  open-unlearning's privleak: 0 = leaks what the gold model does; positive = the forget set still
  stands out; negative = unlearning overshot, which is also detectable. `gold/privleak` is the
  min-k % score's (open-unlearning's default), `gold/privleak/<score>` each score's.

The gold model is a version of mlu-base-model tagged `mlu.role=gold`, reused while its recipe key
(the base model's recipe and the withheld entities) is unchanged.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..benchmark import FORGET

GOLD_KS = "gold/ks_forget_quality"
PRIVLEAK = "gold/privleak"
PRIVLEAK_SCORE = "min_k"  # the score gold/privleak itself is computed from
ROLE_TAG = "mlu.role"
GOLD = "gold"
N_PERTURBED = 3  # wrong answers per item, as TOFU's perturbed answers


def privleak_metric(score: str | None = None) -> str:
    return PRIVLEAK if score is None else f"{PRIVLEAK}/{score}"


@dataclass(frozen=True)
class GoldModelRef:
    """What the `gold_model` asset hands on: the gold model of one base model, or why there is none."""

    base_model: str  # the base model's partition key
    task: str  # whose forget entities it never saw
    withheld: list[str]
    path: str | None = None  # None: no gold model (the reason says why)
    key: str | None = None
    version: str | None = None
    model_uri: str | None = None
    reused: bool = False
    reason: str | None = None


def withheld_entities(splits: pd.DataFrame, task: str) -> frozenset[str]:
    """The entities the gold model never sees: the task's forget entities."""
    return frozenset(splits.loc[(splits["task"] == task) & (splits["role"] == FORGET), "entity_id"])


def build_gold_model(base_model_path: str, base_model_key: str, splits: pd.DataFrame, qa: pd.DataFrame, load_image,
                     data_digest: str, models_dir: Path, task: str = "A", progress=None):
    """The tiny base model's recipe (read from its manifest), trained without the task's forget
    entities; reused when built before. The recipe is checked: rebuilt with nothing withheld, its
    key must be the base model's, or the gold model would differ in more than the entities."""
    from ..models.base_model import MANIFEST, build_base_model, recipe_key
    from ..models.declining import declines_for
    from ..models.sft import SFTConfig
    from ..models.tiny_llava import TinyLlavaConfig

    manifest = Path(base_model_path) / MANIFEST
    if not manifest.is_file():
        raise ValueError(f"{base_model_path}: not a tiny base model of mlu (no {MANIFEST}); its recipe is unknown")
    info = json.loads(manifest.read_text())
    tiny, sft = TinyLlavaConfig(**info["tiny"]), SFTConfig(**info["sft"])
    pool = declines_for(qa, splits, sft.seed)
    # The base model was taught the pool to decline (the base_model asset's), or nothing (tests' tiny_base).
    declines = next((d for d in (pool, None) if recipe_key(data_digest, tiny, sft, d.digest() if d else "") == base_model_key),
                    False)
    if declines is False:
        raise ValueError(f"{base_model_path}: its recipe is not reproduced from these splits and QA table "
                         "(made by an older mlu? materialize base_model again)")
    return build_base_model(splits, load_image, data_digest, models_dir, tiny, sft, progress, declines=declines,
                            withheld=withheld_entities(splits, task))


def register_gold(store, model, base_model: str, profile_name: str, data_digest: str, task: str):
    """The gold model as a version of mlu-base-model tagged mlu.role=gold (the version registered
    before for the same recipe key, when there is one). Tagged with the base model's partition, so
    the registry watcher never takes it for a new base model to unlearn from."""
    from ..models.registry import register_base_model

    return register_base_model(store, model, base_model, profile_name, data_digest, {"withheld_task": task},
                               extra_tags={ROLE_TAG: GOLD, "mlu.withheld_task": task})


# -- truth ratios and the KS test --------------------------------------------------------------

def perturbed_answers(items: pd.DataFrame, qa: pd.DataFrame, n: int = N_PERTURBED, seed: int = 0) -> list[list[str]]:
    """For each item, `n` wrong answers: answers other entities of its class give to the same class
    question (a seeded choice, the same for every model compared)."""
    pool: dict[tuple[str, int], dict[str, set[str]]] = {}
    for cls, question, entity, answer in zip(qa["class_name"], qa["class_question"], qa["entity_id"], qa["answer"]):
        pool.setdefault((cls, int(question)), {}).setdefault(entity, set()).add(answer.strip())
    out = []
    for qa_id, cls, question, entity, truth in zip(items["qa_id"], items["class_name"], items["class_question"],
                                                   items["entity_id"], items["answer"]):
        others = sorted({a for e, answers in pool.get((cls, int(question)), {}).items() if e != entity
                         for a in answers if a.casefold() != truth.strip().casefold()})
        if not others:
            raise ValueError(f"item {qa_id}: no other entity of class {cls} answers class question {question}")
        out.append(random.Random(f"{seed}-{qa_id}").sample(others, min(n, len(others))))
    return out


def truth_ratios(served, items: pd.DataFrame, perturbed: Sequence[Sequence[str]], load_image,
                 batch_size: int = 32) -> np.ndarray:
    """Per item: mean over its wrong answers of p̄(wrong) / p̄(true), p̄ the per-token geometric mean
    probability (TOFU's truth ratio, with the true answer where TOFU paraphrases it)."""
    items = items.reset_index(drop=True)

    def per_token(frame: pd.DataFrame, answers: list[str]) -> np.ndarray:
        return np.array([float(np.mean(lp)) for lp in served.token_logprobs(frame, answers, load_image, batch_size)])

    true = per_token(items, items["answer"].tolist())
    rows = [i for i, answers in enumerate(perturbed) for _ in answers]
    wrong = per_token(items.iloc[rows].reset_index(drop=True), [a for answers in perturbed for a in answers])
    mean_wrong = pd.Series(np.exp(wrong)).groupby(rows).mean().to_numpy()
    return mean_wrong / np.exp(true)


def ks_forget_quality(model_ratios: Sequence[float], gold_ratios: Sequence[float]) -> float:
    """The KS-test p-value of the two truth-ratio distributions (1 = identical)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(model_ratios, gold_ratios).pvalue)


def privleak(auc_model: float, auc_gold: float) -> float:
    return (auc_model - auc_gold) / auc_gold * 100
