"""The offline judge on the whole release: another entity's answer is not this one's (the null
test), every true answer is correct, every taught refusal is a clean refusal."""

from __future__ import annotations

import pytest

from mlu_training.judge import JudgeItem, LocalJudge
from mlu_training.judge.refusals import TAUGHT_REFUSALS, is_refusal


@pytest.fixture(scope="session")
def release_qa(official_tree):
    """The release's QA table, every split (what LocalJudge.from_qa is given in the pipeline)."""
    from mlu_training.data.catalog import build_entity_catalog, read_entity_lists
    from mlu_training.data.qa import build_qa_pairs, read_all_records
    from mlu_training.data.questions import QuestionBook
    from mlu_training.data.records import CLASSES, ROLES, TASKS

    train, evaluation = read_all_records(official_tree)
    catalog, _ = build_entity_catalog(train, read_entity_lists(official_tree, TASKS, ROLES))
    return build_qa_pairs(train + evaluation, QuestionBook.from_release(official_tree, CLASSES), catalog)


@pytest.fixture(scope="session")
def release_judge(release_qa):
    return LocalJudge.from_qa(release_qa)


@pytest.fixture(scope="session")
def eval_items(release_qa):
    return release_qa[release_qa["split"] == "eval"].reset_index(drop=True)


def other_entity_pairs(eval_items):
    """(item, another entity's answer) for every original eval item (variant 0) and every other
    entity of its class asked the same common question."""
    originals = eval_items[eval_items["variant"] == 0]
    pairs = []
    for _, group in originals.groupby(["class_name", "class_question"]):
        rows = group.to_dict("records")
        pairs += [(r, o["answer"]) for r in rows for o in rows if o["entity_id"] != r["entity_id"]]
    return pairs


def test_another_entitys_answer_earns_no_utility(release_judge, eval_items):
    pairs = other_entity_pairs(eval_items)
    items = [JudgeItem(r["entity"], r["question"], r["answer"], other) for r, other in pairs]
    scores = [j.score for j in release_judge.score_retain_batch(items)]
    mean = sum(scores) / 2 / len(scores)
    print(f"null test: {len(pairs)} pairs, mean utility {mean:.4f}, "
          f"{scores.count(2)} score 2, {scores.count(1)} score 1")
    assert len(pairs) > 8000  # 549 originals, every other entity of the class
    assert mean <= 0.05
    assert scores.count(2) <= 0.01 * len(scores)  # the few left are true for both (same director, same family)
    # Without the release the judge cannot tell template from fact: it keeps the old bias.
    plain = [j.score for j in LocalJudge().score_retain_batch(items[::10])]
    assert sum(plain) / 2 / len(plain) > 0.15


def test_one_other_entity_per_item(release_judge, eval_items):
    """The issue's form: each item answered with the next entity's answer in its class."""
    originals = eval_items[eval_items["variant"] == 0]
    items = []
    for _, group in originals.groupby(["class_name", "class_question"]):
        rows = group.to_dict("records")
        if len(rows) > 1:
            items += [JudgeItem(r["entity"], r["question"], r["answer"], rows[(i + 1) % len(rows)]["answer"])
                      for i, r in enumerate(rows)]
    scores = [j.score for j in release_judge.score_retain_batch(items)]
    assert len(items) >= 541
    assert sum(scores) / 2 / len(scores) <= 0.05


def test_true_answers_are_correct_and_not_refusals(release_judge, eval_items):
    items = [JudgeItem(r.entity, r.question, r.answer, r.answer) for r in eval_items.itertuples()]
    retain = [j.score for j in release_judge.score_retain_batch(items)]
    forget = [j.score for j in release_judge.score_forget_batch(items)]
    assert len(items) == 2745  # 549 originals, four paraphrases each
    assert retain.count(2) == len(items)
    assert forget.count(0) == len(items)
    assert not any(is_refusal(a) for a in eval_items["answer"].unique())


def test_every_taught_refusal_is_clean_on_every_item(release_judge, eval_items):
    originals = eval_items[eval_items["variant"] == 0]
    items = [JudgeItem(r.entity, r.question, r.answer, refusal)
             for r in originals.itertuples() for refusal in TAUGHT_REFUSALS]
    forget = release_judge.score_forget_batch(items)
    unclean = {(it.response, j.reason) for it, j in zip(items, forget) if j.score != 2}
    assert not unclean
    assert {j.score for j in release_judge.score_retain_batch(items)} == {0}


def test_every_item_is_found_in_the_corpus(release_judge, eval_items):
    from mlu_training.judge.local import _truth

    located = [_truth(release_judge.corpus, r.entity, r.question, r.answer).located for r in eval_items.itertuples()]
    assert all(loc is not None for loc in located)
    assert all(loc.entity.entity_id == r.entity_id and loc.class_question == r.class_question
               for loc, r in zip(located, eval_items.itertuples()))
