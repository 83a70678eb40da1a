"""Great Expectations 1.x suites kept as JSON in expectations/, run on pandas tables.

Each expectation carries `meta.check_name` (the Dagster check it becomes) and `meta.field` (the
release field a failure points at), so a failure reads "file, record, field: value".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..paths import PROJECT_ROOT

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
MAX_EXAMPLES = 10


@dataclass
class ExpectationOutcome:
    check_name: str
    description: str
    expectation_type: str
    column: str
    passed: bool
    unexpected_count: int = 0
    examples: list[str] = field(default_factory=list)  # "file, record N, field F: value"

    def summary(self) -> str:
        if self.passed:
            return self.description
        return (f"{self.unexpected_count} row(s) fail '{self.description}' — e.g. "
                + "; ".join(self.examples[:3]))


def load_suite_spec(name: str, folder: Path = EXPECTATIONS_DIR) -> dict:
    return json.loads((Path(folder) / f"{name}.json").read_text(encoding="utf-8"))


def check_names(name: str, folder: Path = EXPECTATIONS_DIR) -> list[tuple[str, str]]:
    """(check name, description) of each expectation; cheap, no GX import (for Dagster defs)."""
    return [(e["meta"]["check_name"], e["meta"]["description"]) for e in load_suite_spec(name, folder)["expectations"]]


def with_derived_columns(qa: pd.DataFrame) -> pd.DataFrame:
    """The columns the suite checks that are not in the QA table itself:

    - `task_roles`: the roles an entity has within its task, "forget+retain" when both;
    - `image_nfc`, `question_nfc`: the text in Unicode NFC form (an NFD copy is the same record);
    - `entity_classes`, `entity_sides`: how many classes, and (task, role) pairs, an entity has;
    - `entity_spellings`: how many entity folders share this one's name once spaces,
      underscores, Unicode form and case are set aside (Big Ben and Big_Ben: 2);
    - `task_side`: "<task> <role> <split>", so that a side with no rows at all can be named.
    """
    import unicodedata

    from .catalog import entity_key

    roles = (qa.groupby(["task", "entity_id"])["role"]
             .agg(lambda r: "+".join(sorted(set(r)))).rename("task_roles"))
    out = qa.join(roles, on=["task", "entity_id"])
    nfc = lambda text: unicodedata.normalize("NFC", text) if isinstance(text, str) else text  # noqa: E731
    out["image_nfc"] = out["image"].map(nfc)
    out["question_nfc"] = out["question"].map(nfc)
    per_entity = qa.groupby("entity_id")
    out["entity_classes"] = out["entity_id"].map(per_entity["class_name"].nunique()).astype("int64")
    sides = qa[["entity_id", "task", "role"]].drop_duplicates().groupby("entity_id").size()
    out["entity_sides"] = out["entity_id"].map(sides).astype("int64")
    keys = pd.Series({e: entity_key(e) for e in qa["entity_id"].unique()}, dtype=object)
    out["entity_spellings"] = out["entity_id"].map(keys.map(keys.value_counts())).astype("int64")
    out["task_side"] = out["task"].astype(str) + " " + out["role"].astype(str) + " " + out["split"].astype(str)
    return out


with_task_roles = with_derived_columns  # the name the asset and older callers use


def validate(df: pd.DataFrame, suite_name: str, parameters: dict | None = None,
             folder: Path = EXPECTATIONS_DIR) -> list[ExpectationOutcome]:
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    spec = load_suite_spec(suite_name, folder)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("mlu")
             .add_dataframe_asset(suite_name)
             .add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": df.reset_index(drop=True)}))
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=spec["expectations"]))
    result = batch.validate(suite, expectation_parameters=parameters or {},
                            result_format={"result_format": "COMPLETE"})

    by_name = {e["meta"]["check_name"]: e for e in spec["expectations"]}
    outcomes = []
    for r in result.results:
        meta = r.expectation_config.meta or {}
        name = meta["check_name"]
        column = r.expectation_config.kwargs.get("column") or ",".join(r.expectation_config.kwargs.get("column_list", []))
        outcome = ExpectationOutcome(name, by_name[name]["meta"]["description"], r.expectation_config.type,
                                     column, bool(r.success))
        if r.exception_info and r.exception_info.get("raised_exception"):
            outcome.passed = False
            outcome.examples = [f"expectation could not run: {r.exception_info.get('exception_message')}"]
        elif not r.success and "unexpected_index_list" not in r.result:  # about the whole table, not rows
            outcome.unexpected_count = int(r.result.get("missing_count") or 1)
            outcome.examples = [_describe_table_failure(r.expectation_config.kwargs, r.result)]
        elif not r.success:
            rows = list(r.result.get("unexpected_index_list") or [])
            outcome.unexpected_count = int(r.result.get("unexpected_count") or len(rows))
            outcome.examples = [_locate(df.iloc[int(i)], meta.get("field", column), meta.get("shows", column))
                                for i in rows[:MAX_EXAMPLES] if isinstance(i, (int, float))]
        outcomes.append(outcome)
    order = {e["meta"]["check_name"]: i for i, e in enumerate(spec["expectations"])}
    return sorted(outcomes, key=lambda o: order[o.check_name])


def _locate(row: pd.Series, release_field: str, shows: str) -> str:
    """Where a failing value came from in the release, and what of the row to show: a column (or
    several, comma-separated), or `length:<column>` for a value too long to print."""
    if shows.startswith("length:"):
        text = f"{len(row[shows.split(':', 1)[1]]):,} characters"
    elif "," in shows:
        text = repr(tuple(_plain(row[c]) for c in shows.split(",")))
    else:
        text = repr(_plain(row[shows])) if shows else "''"
    return f"{row['source_file']}, record {row['record']}, field {release_field}: {text[:120]}"


def _plain(value):
    """numpy scalars as plain Python values (np.False_ prints as False)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _describe_table_failure(kwargs: dict, result: dict) -> str:
    """A failure of a whole-table expectation, said plainly (what is missing)."""
    missing = result.get("partial_missing_list")
    if missing:
        return f"no rows at all for {', '.join(map(str, missing))} (column {kwargs.get('column')})"
    return f"observed {result.get('observed_value')!r}"[:200]
