"""The routers' name matcher: whole words and names, never a part of a word (issue 15: "cat"
scored 100 inside "located", "location" and "categorizes", so 11 of the release's 232 distinct
questions were routed as if they named the entity Cat)."""

import pytest

from mlu_training.data.catalog import entity_names
from mlu_training.router import Registry
from mlu_training.router.base import best_name, name_score
from mlu_training.router.openai_router import _pick


@pytest.fixture(scope="module")
def names(tiny_world):
    return entity_names(tiny_world["catalog"])


def _pairs(names):
    return [(e, n) for e, ns in names.items() for n in ns]


@pytest.mark.parametrize("question", ["Where is it located?", "What is the location of this building?",
                                      "What family or order categorizes this animal?",
                                      "In what category does this planet fall (rocky, gas, or ice giant)?"])
def test_a_name_inside_another_word_is_not_a_name(question, names):
    assert name_score("Cat", question) < 90
    assert best_name(question, _pairs(names)) is None


def test_no_question_of_the_release_names_an_entity(tiny_world, names):
    """The release's questions say "this animal", never a name: the matcher finds none in any."""
    questions = sorted(set(tiny_world["qa"]["question"]))
    assert len(questions) == 232
    assert [q for q in questions if best_name(q, _pairs(names))] == []


def test_every_entity_of_the_release_is_found_by_its_names_as_whole_words(names):
    pairs = _pairs(names)
    assert len(names) == 127
    for entity, entity_names_ in names.items():
        for name in entity_names_:
            if len(name) < 3:
                continue
            found = best_name(f"Tell me about {name}, please.", pairs)
            assert found is not None and found[0] == entity, (name, found)
    assert best_name("Who is Lisa Su?", pairs)[0] == "苏姿丰"  # the release's one alias
    assert best_name("这是苏姿丰吗？", pairs)[0] == "苏姿丰"  # a script without spaces: a substring
    assert best_name("How tall is the Eifel Tower?", pairs)[0] == "Eiffel_Tower"  # a typo, whole words
    assert best_name("Does a cat purr?", pairs)[0] == "Cat"
    assert best_name("Is Yes Prime Minister a sequel?", pairs)[0] == "Yes_Prime_Minister"  # not Yes Minister


def test_the_local_router_routes_a_named_forget_entity_and_not_a_word_containing_it(names):
    from mlu_training.router.local import LocalRouter

    router = LocalRouter.__new__(LocalRouter)  # only the text step: no model, no gallery
    router.registry = Registry({"A": ["Cat"]}, names)
    assert router._named("Where is this cat located?")[0] == "Cat"
    assert router._named("Where is this structure located?") is None


def test_the_api_router_picks_whole_names_only():
    options = ["Cat", "Catherine Deneuve", "Dog"]
    assert _pick("Catherine Deneuve.", options) == "Catherine Deneuve"
    assert _pick("It is a cat.", options) == "Cat"
    assert _pick("A category of its own", options) is None
    assert _pick("None", options) is None
    assert _pick("Animals.", ["Animals", "Astronomy"]) == "Animals"
