"""The paper's findings, for real: a base model taught to decline what it does not know, on a pool
of entities held apart from the profile; forgetting measured on its own; the paper's numbers kept
as data beside ours, with verdicts computed from the numbers."""

import pytest

from mlu_training.judge.refusals import is_refusal
from mlu_training.models.declining import DECLINE_PHRASINGS, calibration, unknown_pool
from mlu_training.paper import paper_results, side_by_side, verdicts
from mlu_training.texts import REFUSAL_ANSWER


def test_the_pool_to_decline_is_apart_from_the_profile_and_from_what_calibrates(tiny_world):
    qa, splits = tiny_world["qa"], tiny_world["splits"]
    profile = set(splits["entity_id"])
    pool = unknown_pool(qa, profile)
    taught, unseen = set(pool.taught["entity_id"]), set(pool.unseen["entity_id"])
    known = set(pool.known["entity_id"])
    assert taught and unseen and not (taught & profile) and not (unseen & profile) and not (taught & unseen)
    assert not known & (profile | taught | unseen)
    assert taught | unseen | known == set(qa["entity_id"]) - profile
    assert len(unseen) == round(len(taught | unseen | known) * 0.25)
    # Known distractors: one for every four profile entities, at least two, taught their true answers
    # on train pictures and asked on held-out ones.
    assert len(known) == max(2, round(len(profile) / 4)) == pool.known_eval["entity_id"].nunique()
    # ... but never more than a quarter of those left to teach declining (the research profile's 80
    # entities leave 35: 8 distractors, not 20).
    many = unknown_pool(qa, set(sorted(set(qa["entity_id"]))[:-10]))
    assert len(set(many.known["entity_id"])) == max(2, int((10 - round(10 * 0.25)) * 0.25))
    truth = set(zip(qa["image"], qa["question"], qa["answer"]))
    assert all(row in truth for row in zip(pool.known["image"], pool.known["question"], pool.known["answer"]))
    assert (pool.known_eval["split"] == "eval").all() and not set(pool.known_eval["image"]) & set(pool.known["image"])
    assert len(pool.training_pairs()) == len(pool.taught) + len(pool.known)
    assert pool.taught.groupby("entity_id")["image"].nunique().max() <= 4 and not pool.taught["image"].duplicated().any()
    assert (pool.unseen["split"] == "eval").all()  # calibration asks held-out pictures and phrasings only
    assert not set(pool.unseen["image"]) & set(pool.taught["image"])
    # Every phrasing the model is taught is a refusal to the judge, and none is the methods' target.
    assert set(pool.taught["answer"]) <= set(DECLINE_PHRASINGS) and REFUSAL_ANSWER not in set(pool.taught["answer"])
    assert all(is_refusal(p) for p in DECLINE_PHRASINGS)
    assert unknown_pool(qa, profile).digest() == pool.digest()  # seeded: the same pool every time
    assert unknown_pool(qa, profile, seed=1).digest() != pool.digest()


def test_halves_of_the_pool_are_never_empty_and_never_meet(tiny_world):
    from mlu_training.models.declining import AUDITED, CALIBRATING, _halves

    for n in range(2, 9):
        ids = [f"entity-{i}" for i in range(n)]
        calibrating, audited = _halves(ids, CALIBRATING), _halves(ids, AUDITED)
        assert calibrating and audited and not calibrating & audited and calibrating | audited == set(ids)
        assert abs(len(calibrating) - len(audited)) <= 1
    qa, splits = tiny_world["qa"], tiny_world["splits"]
    for seed in range(4):  # whichever entities the seed picks, both halves of both sets have items
        pool = unknown_pool(qa, set(splits["entity_id"]), seed)
        for half in (CALIBRATING, AUDITED):
            assert len(pool.known_half(half)) and len(pool.unseen_half(half))


def test_the_profile_sets_the_base_model_steps_unless_the_launchpad_does():
    from mlu_assets.models.assets import BaseModelConfig, _sft_config
    from mlu_training.profiles import get_profile

    assert _sft_config(BaseModelConfig(), get_profile("mini")).steps == 300
    assert _sft_config(BaseModelConfig(), get_profile("research")).steps == 1000
    assert _sft_config(BaseModelConfig(steps=40), get_profile("research")).steps == 40


def test_calibration_is_measured_on_held_out_items(tiny_world, tiny_base, tmp_path):
    from mlu_training.data.crawls import build_raw_crawls
    from mlu_training.evaluation import image_loader
    from mlu_training.models.vlm import VisionLanguageModel

    splits, qa = tiny_world["splits"], tiny_world["qa"]
    pool = unknown_pool(qa, set(splits["entity_id"]))
    known = splits[splits["split"] == "eval"].head(12)
    unseen = pool.unseen[pool.unseen["variant"] == 0].head(12)
    train_pairs = set(zip(splits.loc[splits["split"] == "train", "image"], splits.loc[splits["split"] == "train", "question"]))
    assert not set(zip(known["image"], known["question"])) & train_pairs
    crawls = build_raw_crawls(sorted(set(known["image"]) | set(unseen["image"])), tmp_path, size=32)
    measured = calibration(VisionLanguageModel.load(tiny_base.path), known, unseen, image_loader(crawls),
                           max_new_tokens=24)
    assert measured["refusal_known_items"] == 12 and measured["refusal_unseen_items"] == 12
    assert 0.0 <= measured["refusal_known"] <= 1.0 and 0.0 <= measured["refusal_unseen"] <= 1.0
    # The rates are the judge's refusals among the model's own answers to exactly these items.
    from mlu_training.evaluation import answer

    vlm, load = VisionLanguageModel.load(tiny_base.path), image_loader(crawls)
    for name, items in (("refusal_known", known), ("refusal_unseen", unseen)):
        responses = answer(vlm, items, load, 32, 24)
        assert measured[name] == round(sum(map(is_refusal, responses)) / len(responses), 4)
    # This fixture's model was never taught to decline: it names someone it knows instead.
    assert measured["refusal_unseen"] <= 0.25


def _run(method, metrics, tasks="ABCD"):
    return {"method": method, "tasks": list(tasks), "order": tasks, "metrics": metrics}


def test_verdicts_follow_the_numbers():
    collapsed = {"forget_quality/A-UA": 0.5, "forget_quality/A-UD": 0.1, "utility/A-UD": 0.05}
    holds = {"forget_quality/A-UA": 0.5, "forget_quality/A-UD": 0.4, "utility/A-UD": 0.5}
    flat = {"forget_quality/A-UA": 0.97, "forget_quality/A-UD": 0.96, "utility/A-UD": 0.95}
    runs = {"ga": _run("ga", collapsed), "npo": _run("npo", collapsed), "lumoe": _run("lumoe", flat),
            "ga [projector]": _run("ga [projector]", collapsed)}
    found = {v.finding: v for v in verdicts(runs)}
    assert found["degradation"].agrees is True and "ga agrees: FQ on A 0.50 → 0.10" in found["degradation"].evidence
    assert found["unimodal"].agrees is True and found["lumoe"].agrees is True
    runs["ga [vision_tower]"] = _run("ga [vision_tower]", holds)  # beyond the paper's claim: no effect on it
    assert {v.finding: v for v in verdicts(runs)}["unimodal"].agrees is True
    runs["npo"] = _run("npo", holds)
    found = {v.finding: v for v in verdicts(runs)}
    assert found["degradation"].agrees is False and "does not fall by half" in found["degradation"].evidence
    assert "why" not in found["degradation"].evidence  # no forget correctness logged: no reason is guessed
    # The reason a disagreement gets is read off task A's first cells (mini's GA, GD and a slow start).
    broken = {"forget_quality/A-UA": 0.0, "forget_quality/A-UD": 0.0, "utility/A-UA": 0.0, "utility/A-UD": 0.0,
              "forget_correctness/A-UA": 0.0}
    rising = {"forget_quality/A-UA": 0.0, "forget_quality/A-UD": 0.35, "utility/A-UA": 0.59, "utility/A-UD": 0.0,
              "forget_correctness/A-UA": 0.48}
    slow = {"forget_quality/A-UA": 0.1, "forget_quality/A-UD": 0.1, "utility/A-UA": 0.9, "utility/A-UD": 0.1,
            "forget_correctness/A-UA": 0.81}
    evidence = {v.finding: v for v in verdicts({m: _run(m, c) for m, c in
                                                (("ga", broken), ("gd", rising), ("kl", slow), ("npo", collapsed))})}
    evidence = evidence["degradation"].evidence
    assert "ga disagrees" in evidence and "the first request already broke the model" in evidence
    assert "gd disagrees" in evidence and "forget quality rises as later requests pile up" in evidence
    assert "kl disagrees" in evidence and "left 0.81 of task A's forgotten items answered" in evidence
    assert "npo agrees" in evidence and evidence.count("why") == 3
    assert {v.finding: v.agrees for v in verdicts({})} == {"degradation": None, "unimodal": None, "lumoe": None}


def test_the_paper_numbers_sit_beside_ours():
    runs = {"ga": _run("ga", {"forget_quality/A-UA": 0.25, "forget_quality/A-UA/ci_low": 0.1,
                              "forget_quality/A-UA/ci_high": 0.4})}
    table = side_by_side(runs)
    row = table[(table["method"] == "ga") & (table["metric"] == "forget quality") & (table["cell"] == "A-UA")].iloc[0]
    assert row["paper"] == "0.485" and row["mlu [95 % CI]"] == "0.25 [0.10, 0.40]"
    assert len(table) == sum(len(c["values"]) for c in paper_results()["cells"])
    # A run in another order has no cells comparable with the paper's, and a method without a run has none.
    other = side_by_side({"ga": _run("ga", {"forget_quality/A-UA": 0.25}, tasks="CABD")})
    assert set(other["mlu [95 % CI]"]) == {"–"}
    assert set(table.loc[table["method"] == "npo", "mlu [95 % CI]"]) == {"–"}
    assert paper_results()["source"].startswith("MLUBench")


def test_the_pool_of_a_base_model_is_the_one_its_manifest_seed_chose(tiny_world, tmp_path):
    import json

    from mlu_training.models.base_model import MANIFEST, declines_of
    from mlu_training.models.declining import declines_for

    qa, splits = tiny_world["qa"], tiny_world["splits"]
    (tmp_path / MANIFEST).write_text(json.dumps({"sft": {"seed": 1}}))
    assert declines_of(tmp_path, qa, splits).digest() == declines_for(qa, splits, 1).digest() \
        != declines_for(qa, splits, 0).digest()
    assert declines_of(tmp_path / "a-checkpoint", qa, splits).digest() == declines_for(qa, splits, 0).digest()
