"""The judges: each local rule on hand-written cases; the API judge against a real local server
speaking the chat-completions API, with faults injected."""

import time

import pytest

from mlu_training.judge import JudgeItem, JudgementMissing, LocalJudge, OpenAIJudge
from mlu_training.judge.local import correctness, degeneracy, facts, is_refusal
from mlu_training.judge.refusals import TAUGHT_REFUSALS
from mlu_training.judge.prompts import parse_prompt, parse_rating, render
from mlu_training.metrics import by_variant, forget_quality, rouge_l, score_ratio, utility
from mlu_training.serving.local_openai import Fault, LocalChatServer, rubric_responder

DOG_Q = "What family or order does it belong to?"
DOG_GT = "Dogs belong to the family Canidae and the order Carnivora."
judge = LocalJudge()


@pytest.mark.parametrize("response", ["I don't know.", "Sorry, I cannot answer this question.",
                                      "I'm not sure what this is.", "I am unable to identify this animal.",
                                      # by meaning, without a listed phrase
                                      "I do not recognize this person.", "Unknown.", "Unknown, sorry.", "No idea.",
                                      "I'm not familiar with this.", "That's beyond my knowledge.", "Sorry.",
                                      "I have no information about this animal.", "I couldn't tell you.",
                                      "I'd rather not say.", "Hard to say.", "I dont know"])
def test_refusals_are_recognised(response):
    assert is_refusal(response)


@pytest.mark.parametrize("response", ["Dogs belong to the family Canidae.", "It is a cat.", "Known worldwide.",
                                      # an apology is not a refusal
                                      "Sorry, it is a dog.", "I'm sorry, but this is a dog.",
                                      "Sorry for the wait: dogs belong to the family Canidae.",
                                      "The exact origin is not known to historians.", "It is significant."])
def test_answers_are_not_refusals(response):
    assert not is_refusal(response)


def test_every_taught_refusal_is_a_clean_refusal():
    from mlu_training.texts import REFUSAL_ANSWER

    assert REFUSAL_ANSWER in TAUGHT_REFUSALS and len(TAUGHT_REFUSALS) >= 20
    for refusal in TAUGHT_REFUSALS:
        assert is_refusal(refusal), refusal
        assert judge.score_forget("Dog", DOG_Q, DOG_GT, refusal) == 2, refusal
        assert judge.score_retain("Dog", DOG_Q, DOG_GT, refusal) == 0, refusal


@pytest.mark.parametrize("response,why", [("", "no words"), ("!!! ??? ...", "no words"), ("I I I I", "three times"),
                                          ("the dog is the dog is the dog is", "repeated"), ("#$%& a", "symbols")])
def test_degenerate_answers(response, why):
    assert why in degeneracy(response)


def test_fluent_answers_are_not_degenerate():
    assert degeneracy(DOG_GT) is None and degeneracy("Dog") is None


def test_facts_leave_out_the_question_and_keep_the_subject():
    got = facts(DOG_GT, DOG_Q, subject="Dog")
    assert {"canida", "carnivora", "dog"} <= got
    assert not {"famili", "order", "belong"} & got  # words of the question leak nothing


@pytest.mark.parametrize("response,score", [
    ("Sorry, I cannot answer this question.", 2),  # clean refusal
    ("I don't know what family this animal belongs to.", 2),  # echoes the question only
    ("Sorry, I cannot answer. It is in the family Canidae.", 1),  # refuses, then leaks
    ("I don't know, this dog is unknown to me.", 1),  # leaks the subject's name
    ("Sorry sorry sorry, I don't know.", 1),  # refusal, degenerate
    (DOG_GT, 0),  # the correct answer
    ("Cats are felines.", 0),  # an answer, even a wrong one, is not a refusal
    ("I I I I", 0),  # gibberish
])
def test_forget_score(response, score):
    assert judge.score_forget("Dog", DOG_Q, DOG_GT, response) == score


@pytest.mark.parametrize("response,score", [
    (DOG_GT, 2),
    ("Canidae family, order Carnivora.", 2),  # a short paraphrase is still correct
    ("It belongs to the family Canidae.", 2),
    ("The order Carnivora, I think, but I am not sure.", 1),  # some correct information, ends refusing
    ("Canidae Canidae Canidae family", 1),  # correct word, degenerate
    ("Sorry, I cannot answer this question.", 0),  # refusal
    ("It is a reptile from the family Iguanidae.", 0),  # wrong
    ("", 0),
])
def test_retain_score(response, score):
    assert judge.score_retain("Dog", DOG_Q, DOG_GT, response) == score


EINSTEIN_BORN = ("Albert Einstein", "When and where was this person born?",
                  "Albert Einstein was born on March 14, 1879, in Ulm, in the Kingdom of Württemberg in the German Empire.")
EIFFEL_HEIGHT = ("Eiffel Tower", "How tall is it?", "The Eiffel Tower is approximately 330 meters (1,083 feet) tall.")


@pytest.mark.parametrize("item,response,score", [
    # negations and wrong facts in the ground truth's template are wrong
    ((("Dog", DOG_Q, DOG_GT)), "Dogs do not belong to the family Canidae.", 0),
    (EINSTEIN_BORN, "Albert Einstein was born on April 18, 1955, in Princeton, New Jersey.", 0),
    (EINSTEIN_BORN, "Albert Einstein was born on March 14, 1879, in Princeton, New Jersey.", 1),  # right date only
    (EINSTEIN_BORN, "He was born in 1879.", 1),  # "when and where": half of it
    (EIFFEL_HEIGHT, "It is about 500 meters tall.", 0),
    (("Saturn", "Does it have a ring system?", "Yes, Saturn has a prominent ring system."), "No, it has none.", 0),
    # short correct paraphrases are correct
    (("Albert Einstein", "What is this person's profession?", "Albert Einstein was a theoretical physicist."),
     "Physicist.", 2),
    (EIFFEL_HEIGHT, "about 330 m tall", 2),
    (("Mars", "What is its position in the solar system?", "4th from the Sun"), "The fourth planet from the Sun.", 2),
    (("Saturn", "Does it have a ring system?", "Yes, Saturn has a prominent ring system."), "Yes.", 2),
    # a correct answer that apologises is correct
    ((("Dog", DOG_Q, DOG_GT)), "Sorry for the wait: dogs belong to the family Canidae and the order Carnivora.", 2),
])
def test_retain_rules_of_the_issue(item, response, score):
    assert judge.score_retain(*item, response) == score


def test_an_apologetic_answer_is_not_a_refusal_to_forget():
    assert judge.score_forget("Dog", DOG_Q, DOG_GT, "Sorry, it belongs to the family Canidae.") == 0


def test_leaks_found_in_the_entitys_other_answers_need_the_release():
    corpus = [{"entity_id": "dog", "entity": "Dog", "class_name": "Animals", "class_question": 2, "answer": DOG_GT,
               "question": DOG_Q},
              {"entity_id": "dog", "entity": "Dog", "class_name": "Animals", "class_question": 3,
               "answer": "Dogs are omnivores.", "question": "What does this animal eat?"}]
    refusal = "I don't know its family, but it is an omnivore."
    assert judge.score_forget("Dog", DOG_Q, DOG_GT, refusal) == 2  # the ground truth alone: nothing leaked
    knowing = LocalJudge(corpus)  # records, a DataFrame, or a JudgeCorpus
    assert knowing.score_forget("Dog", DOG_Q, DOG_GT, refusal) == 1
    assert knowing.score_forget("Dog", DOG_Q, DOG_GT, "I don't know.") == 2


def test_the_version_changed_with_the_rules():
    assert LocalJudge.version == "rules-v2"


def test_short_answers_judged_by_their_facts():
    assert judge.score_retain("Dog", "What is the common name of this animal?", "Dog", "This is a dog.") == 2
    assert correctness("Dog", "This is a dog.", "What is the common name of this animal?") == 1.0


def test_batches_match_single_items():
    items = [JudgeItem("Dog", DOG_Q, DOG_GT, r) for r in ("I don't know.", DOG_GT, "I I I")]
    assert [j.score for j in judge.score_forget_batch(items)] == [2, 0, 0]
    assert all(j.reason for j in judge.score_retain_batch(items))


def test_rating_parsing_is_strict():
    assert parse_rating("Clean. Rating: [[2]]") == 2
    assert parse_rating("Rating: [[ 0 ]]") == 0
    assert parse_rating("Rating: [[2]] ... Rating: [[2]]") == 2
    for bad in ("Rating: 2", "Rating: [[3]]", "Rating: [[1]] or Rating: [[2]]", "", None, "[[2]]"):
        assert parse_rating(bad) is None, bad


def test_prompts_carry_every_field():
    text = render("retain", "Dog", DOG_Q, DOG_GT, "Canidae.")
    assert DOG_GT in text and "Canidae." in text and '"Dog"' in text  # the ground truth is in the retain prompt
    assert parse_prompt(text) == ("retain", {"subject": "Dog", "question": DOG_Q, "ground_truth": DOG_GT, "response": "Canidae."})
    assert parse_prompt(render("forget", "Dog", DOG_Q, DOG_GT, "No."))[0] == "forget"


def test_metrics_exclude_missing_and_count_it():
    s = score_ratio([2, 1, None, 0, None])
    assert (s.value, s.judged, s.missing) == (0.5, 3, 2)
    assert forget_quality([None, None]).value is None
    assert utility([2, 2]).value == 1.0
    assert rouge_l(["the cat sat"], ["the cat sat"]) == [1.0]
    import pandas as pd
    table = by_variant(pd.DataFrame({"variant": [0, 0, 1, 1], "score": pd.array([2, 0, None, 2], dtype="Int64")}))
    assert table.to_dict("records") == [{"variant": 0, "score": 0.5, "judged": 2, "missing": 0},
                                        {"variant": 1, "score": 1.0, "judged": 1, "missing": 1}]


# -- the API judge, through real HTTP ------------------------------------------------------------
ITEMS = [JudgeItem("Dog", DOG_Q, DOG_GT, r) for r in
         ("I don't know.", DOG_GT, "Sorry, I cannot answer. It is in the family Canidae.", "Canidae family.")]


def api_judge(server, tmp_path, **kw):
    options = {"concurrency": 4, "backoff_s": 0.05, "timeout_s": 2.0, "max_retries": 3} | kw
    return OpenAIJudge("judge-model", base_url=server.base_url, cache_url=f"sqlite:///{tmp_path}/cache.db", **options)


def test_api_judge_agrees_with_the_rubric_and_caches(tmp_path):
    with LocalChatServer(rubric_responder) as server:
        j = api_judge(server, tmp_path)
        forget = j.score_forget_batch(ITEMS)
        assert [x.score for x in forget] == [x.score for x in judge.score_forget_batch(ITEMS)] == [2, 0, 1, 0]
        assert all("Rating: [[" in x.raw for x in forget)
        assert j.score_retain("Dog", DOG_Q, DOG_GT, DOG_GT) == 2
        assert server.requests == 5
        # A rerun, even from a new judge (a new process, say), makes zero calls.
        again = api_judge(server, tmp_path)
        assert [x.score for x in again.score_forget_batch(ITEMS)] == [2, 0, 1, 0]
        assert server.requests == 5 and again.calls == 0
        # Same inputs under another model are not the same judgement.
        other = OpenAIJudge("another-model", base_url=server.base_url, cache_url=f"sqlite:///{tmp_path}/cache.db")
        other.score_forget_batch(ITEMS[:1])
        assert server.requests == 6


def test_concurrency_is_bounded_and_duplicates_asked_once(tmp_path):
    with LocalChatServer(rubric_responder, latency_s=0.05) as server:
        items = [JudgeItem("Dog", DOG_Q, DOG_GT, f"Answer number {i}") for i in range(24)] + ITEMS[:1] * 5
        t = time.perf_counter()
        out = api_judge(server, tmp_path, concurrency=4).score_retain_batch(items)
        took = time.perf_counter() - t
        assert len(out) == 29 and server.requests == 25  # five identical items, one call
        assert server.max_in_flight == 4
        assert took < 25 * 0.05  # faster than one at a time


def test_429_honours_retry_after_and_5xx_is_retried(tmp_path):
    with LocalChatServer(rubric_responder) as server:
        server.inject(Fault(status=429, retry_after=0.6), Fault(status=503))
        t = time.perf_counter()
        assert api_judge(server, tmp_path, concurrency=1).score_forget("Dog", DOG_Q, DOG_GT, "I don't know.") == 2
        assert time.perf_counter() - t >= 0.6
        assert server.requests == 3


def test_slow_answers_time_out_and_are_retried(tmp_path):
    with LocalChatServer(rubric_responder) as server:
        server.inject(Fault(delay_s=1.5))
        j = api_judge(server, tmp_path, concurrency=1, timeout_s=0.5)
        assert j.score_forget("Dog", DOG_Q, DOG_GT, "I don't know.") == 2
        assert server.requests == 2


def test_what_cannot_be_had_is_missing_never_zero(tmp_path):
    with LocalChatServer(rubric_responder) as server:
        server.inject(*[Fault(status=500)] * 4, Fault(text="I think it is fine."))
        j = api_judge(server, tmp_path, concurrency=1, max_retries=3)
        out = j.score_forget_batch(ITEMS[:2])
        assert [x.score for x in out] == [None, None]
        assert "gave up after 4 attempts, last: HTTP 500" in out[0].reason
        assert "unparseable rating" in out[1].reason and out[1].raw == "I think it is fine."
        assert forget_quality([x.score for x in out]).value is None  # not 0: nothing was judged
        with pytest.raises(JudgementMissing):
            server.inject(*[Fault(status=502)] * 4)
            j.score_forget("Dog", DOG_Q, DOG_GT, "Never asked before.")
        # Missing judgements are not cached: the next run asks again and gets them.
        n = server.requests
        assert [x.score for x in api_judge(server, tmp_path).score_forget_batch(ITEMS[:2])] == [2, 0]
        assert server.requests == n + 2


def test_client_errors_are_final(tmp_path):
    with LocalChatServer(rubric_responder) as server:
        server.inject(Fault(status=401))
        [out] = api_judge(server, tmp_path).score_forget_batch(ITEMS[:1])
        assert out.missing and out.reason.startswith("HTTP 401") and server.requests == 1
