"""Each Great Expectations expectation fails on its own kind of broken row, and says where."""

import pandas as pd
import pytest

from mlu_training.data.catalog import build_entity_catalog, read_entity_lists
from mlu_training.data.qa import build_qa_pairs, read_all_records
from mlu_training.data.questions import QuestionBook
from mlu_training.data.records import CLASSES, ROLES, TASKS
from mlu_training.data.validation import check_names, validate, with_task_roles

SUITE = "validated_qa_pairs"


@pytest.fixture(scope="module")
def small(official_tree):
    """The rows of a dozen entities (the whole table validates the same, only slower)."""
    train, evaluation = read_all_records(official_tree)
    catalog, _ = build_entity_catalog(train, read_entity_lists(official_tree, TASKS, ROLES))
    qa = build_qa_pairs(train + evaluation, QuestionBook.from_release(official_tree, CLASSES), catalog)
    keep = catalog.groupby(["task", "role"]).head(2)["entity_id"]
    qa = qa[qa["entity_id"].isin(keep)].reset_index(drop=True)
    params = {"catalog_entity_ids": catalog["entity_id"].tolist(), "crawled_images": sorted(set(qa["image"]))}
    return qa, params


def _outcomes(qa, params):
    return {o.check_name: o for o in validate(with_task_roles(qa), SUITE, params)}


def test_the_release_passes_every_expectation(small):
    qa, params = small
    outcomes = _outcomes(qa, params)
    assert list(outcomes) == [name for name, _ in check_names(SUITE)]
    assert len(outcomes) == 14
    assert all(o.passed for o in outcomes.values()), [o.summary() for o in outcomes.values() if not o.passed]


def _set(column, value, row=3):
    def change(qa, params):
        qa.loc[row, column] = value
    return change


def _duplicate_row(new_variant=None):
    def change(qa, params):
        dup = qa.iloc[[3]].copy()
        if new_variant is not None:
            dup["variant"] = new_variant
            dup["qa_id"] = "x" * 16
        qa.loc[len(qa)] = dup.iloc[0]
    return change


def _uncrawled(qa, params):
    params["crawled_images"] = [p for p in params["crawled_images"] if p != qa.loc[3, "image"]]


def _both_roles(qa, params):
    entity_task = qa.loc[3, ["entity_id", "task"]]
    other = qa[(qa["task"] == entity_task["task"]) & (qa["entity_id"] != entity_task["entity_id"])].index[0]
    qa.loc[other, "entity_id"] = entity_task["entity_id"]
    qa.loc[other, "role"] = "retain" if qa.loc[3, "role"] == "forget" else "forget"


CASES = {
    "qa_ids_unique": (_duplicate_row(), "image+question"),
    "image_question_unique_per_file": (_duplicate_row(new_variant=4), "image+question"),
    "question_not_empty": (_set("question", "   "), "conversations[0].value"),
    "answer_not_empty": (_set("answer", ""), "conversations[1].value"),
    "prompt_has_image_token": (_set("prompt_has_image", False), "conversations[0].value"),
    "entity_in_catalog": (_set("entity_id", "Unicorn"), "image"),
    "class_known": (_set("class_name", "Fungi"), "image"),
    "image_path_relative": (_set("image", "/abs/downloaded_images/Animals/Dog/x.jpg"), "image"),
    "image_path_no_parent": (_set("image", "downloaded_images/Animals/../Dog/x.jpg"), "image"),
    "image_in_raw_crawls": (_uncrawled, "image"),
    "forget_retain_disjoint": (_both_roles, "image"),
    "class_question_known": (_set("class_question", pd.NA), "conversations[0].value"),
    "variant_known": (_set("variant", pd.NA), "conversations[0].value"),
    "variant_in_range": (_set("variant", 7), "conversations[0].value"),
}


def test_every_expectation_has_a_case():
    assert sorted(CASES) == sorted(name for name, _ in check_names(SUITE))


@pytest.mark.parametrize("check", sorted(CASES))
def test_each_expectation_fails_on_its_broken_row(small, check):
    qa, params = small
    qa, params = qa.copy(), {k: list(v) for k, v in params.items()}
    change, field = CASES[check]
    change(qa, params)
    outcome = _outcomes(qa, params)[check]
    assert not outcome.passed
    assert outcome.unexpected_count >= 1
    example = outcome.examples[0]
    assert example.startswith("MLUBench/Tasks/") or example.startswith("tasks/")
    assert ", record " in example and f"field {field}:" in example
