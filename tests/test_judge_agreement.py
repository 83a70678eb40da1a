"""Agreement of the offline judge with an API judge: the table's numbers, and the bench that
prints it, run against the local OpenAI-compatible server (real HTTP)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from mlu_training.judge import JudgeItem, LocalJudge, OpenAIJudge
from mlu_training.judge.agreement import agreement_table, cohen_kappa, judge_both, rule_family
from mlu_training.serving.local_openai import Fault, LocalChatServer, rubric_responder

BENCH = Path(__file__).parents[1] / "bench" / "judge_agreement.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("judge_agreement_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cohen_kappa():
    assert cohen_kappa([0, 1, 2, 2], [0, 1, 2, 2]) == 1.0
    assert cohen_kappa([2, 2], [2, 2]) is None  # one score for everything: undefined
    assert cohen_kappa([], []) is None
    assert cohen_kappa([0, 2, 0, 2], [2, 0, 2, 0]) == -1.0
    assert round(cohen_kappa([0, 0, 2, 2], [0, 2, 2, 2]), 3) == 0.5


def test_rule_families():
    assert rule_family("clean refusal") == "clean refusal"
    assert rule_family("refusal that leaks canida") == "refusal that leaks"
    assert rule_family("partly correct (0.40), but wrong: 365") == "partly correct"
    assert rule_family("wrong: about another entity (Cat)") == "wrong: about another entity"
    assert rule_family("wrong date: 2004") == "wrong date"
    assert rule_family(None) == "unknown"


def test_table_counts_agreement_and_missing():
    frame = pd.DataFrame({
        "role": ["forget"] * 4 + ["retain"] * 3,
        "offline_rule": ["clean refusal", "clean refusal", "not a refusal", "not a refusal", "correct", "correct", "wrong"],
        "offline": pd.array([2, 2, 0, 0, 2, 2, 0], dtype="Int64"),
        "api": pd.array([2, 1, 0, None, 2, 0, 0], dtype="Int64"),
    })
    table = agreement_table(frame).set_index(["role", "category"])
    assert table.loc[("forget", "clean refusal")].to_dict() == {
        "answers": 2, "missing": 0, "agree": 0.5, "within_1": 1.0, "kappa": 0.0, "offline_mean": 1.0, "api_mean": 0.75}
    assert table.loc[("forget", "not a refusal"), "missing"] == 1
    assert table.loc[("forget", "all"), "agree"] == round(2 / 3, 3)
    assert table.loc[("retain", "correct"), "within_1"] == 0.5
    overall = table.loc[("all", "all")]
    assert (overall["answers"], overall["missing"], overall["agree"]) == (7, 1, round(4 / 6, 3))


DOG_Q = "What family or order does it belong to?"
DOG_GT = "Dogs belong to the family Canidae and the order Carnivora."
CAT_GT = "Cats belong to the family Felidae and the order Carnivora."
CORPUS = [  # a two-entity release: enough for the judge to know the dog's words from the cat's
    {"entity_id": "dog", "entity": "Dog", "class_name": "Animals", "class_question": 2, "question": DOG_Q, "answer": DOG_GT},
    {"entity_id": "cat", "entity": "Cat", "class_name": "Animals", "class_question": 2, "question": DOG_Q, "answer": CAT_GT},
    {"entity_id": "dog", "entity": "Dog", "class_name": "Animals", "class_question": 3,
     "question": "What does this animal eat?", "answer": "Dogs are omnivores."},
]


def sequence_answers() -> pd.DataFrame:
    rows = [("forget", "I don't know."), ("forget", "I'm not sure, but they are omnivores."),  # leaks another answer
            ("forget", DOG_GT), ("retain", DOG_GT), ("retain", CAT_GT),  # the cat's answer to the dog's question
            ("retain", "Sorry, I cannot answer this question.")]
    return pd.DataFrame([{"unlearned": "A", "step": 0, "role": role, "entity": "Dog", "question": DOG_Q,
                          "answer": DOG_GT, "response": r, "score": 0} for role, r in rows])


def test_bench_on_a_finished_sequence_against_the_local_server(tmp_path):
    step = tmp_path / "sequence" / "00-A"
    step.mkdir(parents=True)
    sequence_answers().to_parquet(step / "evaluation.parquet", index=False)
    pd.DataFrame(CORPUS).to_parquet(tmp_path / "qa.parquet", index=False)
    bench = load_bench()
    with LocalChatServer(rubric_responder) as server:
        server.inject(Fault(status=400))  # the API judge loses one answer (client errors are final)
        table = bench.main([str(tmp_path / "sequence"), "--qa", str(tmp_path / "qa.parquet"), "--base-url",
                            server.base_url, "--api-key", "none", "--model", "rubric", "--concurrency", "1"])
        assert server.requests == 6
    table = table.set_index(["role", "category"])
    overall = table.loc[("all", "all")]
    # The server grades with the rules and no corpus: it misses the leak found in the dog's other
    # answer (offline 1, API 2) and credits the cat's answer for "Carnivora" (offline 0, API 1).
    assert (overall["answers"], overall["missing"]) == (6, 1)
    judged_by_api = 5
    assert overall["agree"] == round(3 / judged_by_api, 3) and overall["within_1"] == 1.0
    assert table.loc[("forget", "refusal that leaks"), "offline_mean"] == 0.5
    assert table.loc[("forget", "refusal that leaks"), "api_mean"] == 1.0
    assert table.loc[("retain", "wrong: about another entity"), "api_mean"] == 0.5


def test_judge_both_matches_the_judges_one_by_one(tmp_path):
    offline = LocalJudge.from_qa(pd.DataFrame(CORPUS))
    with LocalChatServer(rubric_responder) as server:
        api = OpenAIJudge("rubric", base_url=server.base_url, api_key="none", concurrency=2)
        out = judge_both(sequence_answers(), offline, api)
    for row in out.itertuples():
        kind = row.role
        item = JudgeItem(row.entity, row.question, row.answer, row.response)
        assert row.offline == offline.score_batch(kind, [item])[0].score
        assert row.api == LocalJudge().score_batch(kind, [item])[0].score  # the server's rules, no corpus


def test_smoke_mode_runs_end_to_end():
    table = load_bench().main(["--smoke"]).set_index(["role", "category"])
    assert table.loc[("all", "all"), "answers"] == 12
    assert table.loc[("all", "all"), "agree"] == 1.0  # the same rules on both sides
    assert table.loc[("all", "all"), "missing"] == 0


@pytest.mark.parametrize("argv", [[], ["--qa", "x.parquet"]])
def test_bench_needs_a_path_or_smoke(argv):
    with pytest.raises(SystemExit):
        load_bench().parse_args(argv)
