"""What a base model knows: the evaluation items it answers correctly. Unlearning is measured on
these only (a model must know before it can forget), so every later number depends on this."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from ..benchmark import RETAIN
from ..data.splits import splits_digest

SETTINGS = "knowledge_filter"  # the key of the filter's settings in the kept table's attrs


@dataclass
class KnowledgeFilter:
    kept: pd.DataFrame  # the known items, with the base model's answer and score
    table: pd.DataFrame  # every item, with `kept`
    per_task: pd.DataFrame  # task, role, items, kept, missing, kept_fraction
    per_variant: pd.DataFrame  # variant, kept_fraction

    def low_sides(self, min_fraction: float) -> list[tuple[str, str, float]]:
        """(task, role, kept fraction) of every task side that keeps less than `min_fraction`."""
        low = self.per_task[self.per_task["kept_fraction"] < min_fraction]
        return list(low[["task", "role", "kept_fraction"]].itertuples(index=False, name=None))


def filter_known(vlm, items: pd.DataFrame, load_image, judge, threshold: int, batch_size: int,
                 max_new_tokens: int) -> KnowledgeFilter:
    """Ask the model every item (all phrasings) and keep those the judge scores ≥ threshold by the
    utility rubric. A missing judgement is never counted as known."""
    from ..evaluation import answer
    from ..evaluation import judge as judge_answers

    responses = answer(vlm, items, load_image, batch_size, max_new_tokens)
    judged = judge_answers(judge, RETAIN, items, responses)
    table = items.assign(base_response=responses, base_score=judged["score"], judge_reason=judged["judge_reason"])
    table["kept"] = table["base_score"].fillna(-1).astype(int) >= threshold
    per_task = (table.groupby(["task", "role"])
                .agg(items=("qa_id", "size"), kept=("kept", "sum"), missing=("base_score", lambda s: int(s.isna().sum())))
                .reset_index())
    per_task["kept_fraction"] = (per_task["kept"] / per_task["items"]).round(3)
    per_variant = table.groupby("variant")["kept"].mean().round(3).rename("kept_fraction").reset_index()
    kept = table[table["kept"]].drop(columns=["kept"]).reset_index(drop=True)
    kept.attrs[SETTINGS] = {"threshold": threshold, "max_new_tokens": max_new_tokens}  # kept by parquet too
    return KnowledgeFilter(kept, table, per_task, per_variant)


def seedless_items_key(kept: pd.DataFrame) -> str:
    """What a filtered table's items depend on besides the base model and the judge: the filter's
    settings, for config keys that pool runs on base models taught with other seeds (whose kept
    items differ). A table stored before the settings were kept with it: its items' digest, so
    it pools with nothing it might not belong with."""
    settings = kept.attrs.get(SETTINGS)
    return json.dumps(settings, sort_keys=True) if settings else splits_digest(kept)
