"""What a base model knows: the evaluation items it answers correctly. Unlearning is measured on
these only (a model must know before it can forget), so every later number depends on this."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    return _summary(table, threshold, max_new_tokens)


def filter_known_once(cache_dir: Path, model_key: str, data_digest: str, judge_name: str,
                      load_model: Callable[[], object], items: pd.DataFrame, load_image, judge, threshold: int,
                      batch_size: int, max_new_tokens: int) -> tuple[KnowledgeFilter, bool]:
    """`filter_known`, asked once per (model, data, items, judge, settings): the answered table is
    kept under `cache_dir` and read back the next time (True), without loading the model.
    Re-running the asset on unchanged inputs (`mlu run` again, the nightly schedule) then costs a
    read, and the kept items, which every sequence's key depends on, stay the same. `data_digest`
    (the pictures' bytes among it) is apart from the model's key as in a sequence's key: a
    checkpoint's key is its folder alone. A table with a missing judgement (an API judge's fault)
    is not kept: the next run asks again."""
    import io

    from ..paths import atomic_write_bytes

    settings = [model_key, data_digest, splits_digest(items), judge_name, threshold, batch_size, max_new_tokens]
    path = Path(cache_dir) / f"{hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:24]}.parquet"
    if path.is_file():
        return _summary(pd.read_parquet(path), threshold, max_new_tokens), True
    known = filter_known(load_model(), items, load_image, judge, threshold, batch_size, max_new_tokens)
    if known.table["base_score"].isna().any():
        return known, False
    buf = io.BytesIO()
    known.table.to_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())  # never a half-written table at `path`
    return known, False


def _summary(table: pd.DataFrame, threshold: int, max_new_tokens: int) -> KnowledgeFilter:
    """The kept items and the counts the asset shows, from the answered table (column `kept`)."""
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
