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
    assert len(outcomes) == 20
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


def _other_class(qa, params):
    others = sorted(set(qa["class_name"]) - {qa.loc[3, "class_name"]})
    qa.loc[3, "class_name"] = others[0]


def _other_task(qa, params):
    qa.loc[3, "task"] = "D" if qa.loc[3, "task"] != "D" else "A"


def _second_spelling(qa, params):  # "DOG" beside "Dog": one name, two entities
    qa.loc[3, "entity_id"] = qa.loc[3, "entity_id"].upper()
    params["catalog_entity_ids"].append(qa.loc[3, "entity_id"])


def _no_side(qa, params):
    qa.drop(qa[(qa["task"] == "C") & (qa["role"] == "retain") & (qa["split"] == "eval")].index, inplace=True)
    qa.reset_index(drop=True, inplace=True)


CASES = {
    "qa_ids_unique": (_duplicate_row(), "image+question"),
    "image_question_unique_per_file": (_duplicate_row(new_variant=4), "image+question"),
    "question_not_empty": (_set("question", "   "), "conversations[0].value"),
    "answer_not_empty": (_set("answer", "\u200b\u200c\u2060"), "conversations[1].value"),  # zero-width only
    "question_not_too_long": (_set("question", "Why? " * 300), "conversations[0].value"),
    "answer_not_too_long": (_set("answer", "a" * 20_000_000), "conversations[1].value"),  # 20 MB
    "entity_one_class": (_other_class, "image"),
    "entity_one_task_side": (_other_task, "image"),
    "entity_spelling_unique": (_second_spelling, "image"),
    "every_task_side_present": (_no_side, None),
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
    if field is None:  # a property of the whole table: what is missing, named
        assert example == "no rows at all for C retain eval (column task_side)"
        return
    assert example.startswith("MLUBench/Tasks/") or example.startswith("tasks/")
    assert ", record " in example and f"field {field}:" in example


def test_failures_print_what_a_reader_needs(small):
    """The <image> check shows the question (once: np.False_), a long answer its length, and an
    NFD copy of a record is a duplicate of it."""
    import unicodedata

    qa, params = small
    qa, params = qa.copy(), {k: list(v) for k, v in params.items()}
    question = qa.loc[3, "question"]
    qa.loc[3, "prompt_has_image"] = False
    qa.loc[5, "answer"] = "a" * 20_000_000
    outcomes = _outcomes(qa, params)
    assert outcomes["prompt_has_image_token"].examples[0].endswith(f"field conversations[0].value: {question!r}"[:120])
    assert "np." not in outcomes["prompt_has_image_token"].summary()
    assert outcomes["answer_not_too_long"].examples[0].endswith("field conversations[1].value: 20,000,000 characters")
    qa, params = small
    qa = qa.copy()
    dup = qa.iloc[[7]].copy()
    dup["image"] = unicodedata.normalize("NFD", dup["image"].iloc[0].replace("e", "é"))
    dup["question"] = unicodedata.normalize("NFD", dup["question"].iloc[0] + " café")
    qa.loc[7, "question"] = qa.loc[7, "question"] + " café"
    qa.loc[7, "image"] = dup["image"].iloc[0].replace("e\u0301", "é")
    qa.loc[len(qa)] = dup.iloc[0]
    outcome = _outcomes(qa, params)["image_question_unique_per_file"]
    assert not outcome.passed and outcome.unexpected_count == 2
