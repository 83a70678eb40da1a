"""The attacks of issue #15 on real tiny models: relearning, quantization, membership inference and
the gold model's comparison, each checked on a case whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from mlu_training.benchmark import FORGET


@pytest.fixture(scope="module")
def judge(tiny_world):
    from mlu_training.judge import LocalJudge

    return LocalJudge.from_qa(tiny_world["qa"])


@pytest.fixture(scope="module")
def parts(tiny_world):
    splits = tiny_world["splits"]
    return splits[splits["split"] == "train"], splits[splits["split"] == "eval"]


@pytest.fixture(scope="module")
def unlearned(tiny_world, tiny_base, parts, tmp_path_factory):
    """The tiny base model after `idk` on task A (the first step of a baseline's sequence), saved."""
    from mlu_training.adapters import AdapterTraining, train_adapter
    from mlu_training.methods import get_method
    from mlu_training.models.vlm import VisionLanguageModel, seed_everything

    seed_everything(0)
    vlm = VisionLanguageModel.load(tiny_base.path)
    adapted, _ = train_adapter(vlm, get_method("idk"), parts[0], "A", AdapterTraining(steps=30, lr=1e-3), 0,
                               tiny_world["load_image"])
    vlm.model = adapted.merge_and_unload()
    path = tmp_path_factory.mktemp("unlearned") / "model"
    vlm.save(path)
    return str(path)


def test_int8_of_an_unchanged_model_keeps_its_answers(tiny_world, tiny_base, parts, judge):
    from mlu_training.evaluation import score_answers
    from mlu_training.robustness.attacks import FinalModel, fake_quantize

    items = parts[1]
    before = FinalModel(str(tiny_base.path)).load()
    answers = before.answer(items, tiny_world["load_image"])
    int8, int4 = FinalModel(str(tiny_base.path)).load(), FinalModel(str(tiny_base.path)).load()
    assert fake_quantize(int8.vlm.model, 8) == fake_quantize(int4.vlm.model, 4) > 10
    rounded = int8.answer(items, tiny_world["load_image"])
    # Measured: 169 of the 170 answers are the same string; the other stops one sentence later
    # (a near tie between ending and going on, in an undertrained tiny model). Judged alike, all.
    assert sum(a == b for a, b in zip(rounded, answers)) >= 0.97 * len(answers)
    assert all(a.startswith(b) or b.startswith(a) for a, b in zip(rounded, answers))
    assert score_answers(items, rounded, judge)["score"].tolist() == score_answers(items, answers, judge)["score"].tolist()
    # Rounding really happened: each output channel of a layer holds at most 2·7+1 distinct values at 4 bits.
    weight = next(m.weight for m in int4.vlm.model.modules() if m.__class__.__name__ == "Linear")
    assert max(len(set(row.tolist())) for row in weight) <= 15
    assert any(len(set(row.tolist())) > 15 for row in before.vlm.model.state_dict()[
        next(n for n, m in before.vlm.model.named_modules() if m.__class__.__name__ == "Linear") + ".weight"])


def test_relearning_rows_are_a_seeded_tenth_of_the_forget_set(parts):
    from mlu_training.robustness.attacks import relearning_rows

    train = parts[0]
    forget = train[(train["task"] == "A") & (train["role"] == FORGET)]
    rows = relearning_rows(train, "A", FORGET, 0.1, seed=0)
    assert len(rows) == max(1, round(0.1 * len(forget))) and set(rows["qa_id"]) <= set(forget["qa_id"])
    assert rows["qa_id"].tolist() == relearning_rows(train.sample(frac=1, random_state=3), "A", FORGET, 0.1, 0)["qa_id"].tolist()
    retain = relearning_rows(train, "A", "retain", 0.1, seed=0)
    assert len(retain) == len(rows) and (retain["role"] == FORGET).all()  # labelled for train_adapter
    assert set(retain["qa_id"]) <= set(train.loc[(train["task"] == "A") & (train["role"] == "retain"), "qa_id"])


def test_relearning_a_model_that_never_unlearned_scores_no_better_than_the_unlearned(
        tiny_world, tiny_base, unlearned, parts, judge):
    from mlu_training.robustness.attacks import (ATTACK_MEASURES, RELEARN, RELEARN_RETAIN, UNATTACKED, AttackConfig,
                                                 FinalModel, attack_metric, run_attacks)

    train, evaluation = parts
    config = AttackConfig()
    never = run_attacks(FinalModel(str(tiny_base.path)), train, evaluation, tiny_world["load_image"], judge, config)
    after = run_attacks(FinalModel(unlearned), train, evaluation, tiny_world["load_image"], judge, config)
    for result in (never, after):
        measured = {attack_metric(a, m) for a in (UNATTACKED, RELEARN, RELEARN_RETAIN, "int8", "int4") for m in ATTACK_MEASURES}
        assert set(result.metrics) == measured | {f"{m}/ci_{b}" for m in measured for b in ("low", "high")}
        assert set(result.answers["attack"]) == {UNATTACKED, RELEARN, RELEARN_RETAIN, "int8", "int4"}
    # idk taught task A's refusals; the base model never did: relearning can only leave it knowing.
    assert after.metrics[attack_metric(UNATTACKED)] > never.metrics[attack_metric(UNATTACKED)]
    assert never.metrics[attack_metric(RELEARN)] <= after.metrics[attack_metric(RELEARN)]
    # and what it still answers is forget correctness: the base model's is at least the unlearned one's.
    assert never.metrics[attack_metric(UNATTACKED, "forget_correctness")] >= after.metrics[attack_metric(UNATTACKED, "forget_correctness")]
    # Seeded: the same attack on the same model gives the same answers.
    again = run_attacks(FinalModel(unlearned), train, evaluation, tiny_world["load_image"], judge, config)
    assert again.answers["response"].tolist() == after.answers["response"].tolist()


def test_mia_auc_of_identical_distributions_is_one_half(tiny_world, tiny_base, parts):
    from mlu_training.robustness.attacks import FinalModel
    from mlu_training.robustness.mia import MIA_SCORES, auc, membership_scores, mia_aucs, mia_metric

    assert auc([0.1, 0.4, 0.9], [0.1, 0.4, 0.9]) == 0.5
    assert auc([2.0, 3.0], [0.0, 1.0]) == 1.0 and auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    rng = np.random.default_rng(0)
    same = [auc(rng.normal(size=400), rng.normal(size=400)) for _ in range(20)]
    assert abs(np.mean(same) - 0.5) < 0.02
    # Every score is oriented "higher = more familiar": answers the model finds likelier score higher.
    likely, unlikely = membership_scores([np.log([0.9, 0.8, 0.95])], ["Dolphin"]), membership_scores(
        [np.log([0.2, 0.1, 0.3])], ["Dolphin"])
    assert (likely.iloc[0] > unlikely.iloc[0]).all()
    # The same items on both sides, through a real model: exactly indistinguishable.
    items = parts[1][parts[1]["role"] == FORGET]
    aucs = mia_aucs(FinalModel(str(tiny_base.path)).load(), items, items, tiny_world["load_image"])
    assert aucs == {mia_metric(s): 0.5 for s in MIA_SCORES}


def test_ks_p_value_of_the_gold_model_against_itself_is_one(tiny_world, tiny_base, parts):
    from mlu_training.robustness.attacks import FinalModel, attacked_items
    from mlu_training.robustness.gold import ks_forget_quality, perturbed_answers, truth_ratios

    items = attacked_items(parts[1], "A")
    perturbed = perturbed_answers(items, tiny_world["qa"], seed=0)
    assert perturbed == perturbed_answers(items, tiny_world["qa"], seed=0)  # seeded
    assert all(len(p) == 3 and item not in p for p, item in zip(perturbed, items["answer"]))
    served = FinalModel(str(tiny_base.path)).load()
    ratios = truth_ratios(served, items, perturbed, tiny_world["load_image"])
    assert ratios.shape == (len(items),) and (ratios > 0).all()
    assert np.median(ratios) < 1  # the model knows task A: the true answer is likelier than wrong ones
    assert ks_forget_quality(ratios, truth_ratios(FinalModel(str(tiny_base.path)).load(), items, perturbed,
                                                  tiny_world["load_image"])) == 1.0
    assert ks_forget_quality(ratios, ratios * 50) < 0.05


def test_gold_model_is_the_base_recipe_without_task_a_and_is_registered_once(tmp_path, tiny_world, parts):
    """A two-step recipe stands for the base model's (the recipe, not the steps, is under test)."""
    import json

    import mlflow

    from mlu_training.mlflow_store import MlflowStore
    from mlu_training.models.base_model import MANIFEST, build_base_model
    from mlu_training.models.sft import SFTConfig
    from mlu_training.models.vlm import VisionLanguageModel
    from mlu_training.robustness.attacks import FinalModel, attacked_items
    from mlu_training.robustness.gold import (build_gold_model, ks_forget_quality, perturbed_answers, register_gold,
                                              truth_ratios, withheld_entities)

    splits, load = tiny_world["splits"], tiny_world["load_image"]
    base = build_base_model(splits, load, tiny_world["digest"], tmp_path / "models", sft=SFTConfig(steps=2, batch_size=4))
    gold = build_gold_model(str(base.path), base.key, splits, tiny_world["qa"], load, tiny_world["digest"],
                            tmp_path / "models", "A")
    withheld = withheld_entities(splits, "A")
    assert withheld == set(splits.loc[(splits["task"] == "A") & (splits["role"] == FORGET), "entity_id"]) != set()
    assert gold.key != base.key and not gold.reused
    assert json.loads((gold.path / MANIFEST).read_text())["withheld"] == sorted(withheld)
    # The same tokens for every answer: the truth ratios of the two models compare like with like.
    assert VisionLanguageModel.load(gold.path).tokenizer.get_vocab() == VisionLanguageModel.load(base.path).tokenizer.get_vocab()
    assert build_gold_model(str(base.path), base.key, splits, tiny_world["qa"], load, tiny_world["digest"],
                            tmp_path / "models", "A").reused
    with pytest.raises(ValueError, match="recipe"):  # another base model's key: not its recipe
        build_gold_model(str(base.path), "0" * 64, splits, tiny_world["qa"], load, tiny_world["digest"], tmp_path / "models")

    store = MlflowStore(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    registered = register_gold(store, gold, "tiny", "tiny", tiny_world["digest"], "A")
    version = mlflow.MlflowClient(store.tracking_uri).get_model_version("mlu-base-model", registered.version)
    assert version.tags["mlu.role"] == "gold" and version.tags["mlu.recipe_key"] == gold.key
    assert version.tags["mlu.model_partition"] == "tiny"  # so the registry watcher never takes it for a new model
    again = register_gold(store, gold, "tiny", "tiny", tiny_world["digest"], "A")
    assert again.reused and again.version == registered.version

    items = attacked_items(parts[1], "A")
    perturbed = perturbed_answers(items, tiny_world["qa"])
    ratios = [truth_ratios(FinalModel(str(gold.path)).load(), items, perturbed, load) for _ in range(2)]
    assert ks_forget_quality(*ratios) == 1.0


def test_lumoe_is_attacked_as_served_and_its_bypass_is_the_base_model(tiny_world, tiny_base, finished_run, parts, judge):
    from mlu_training.robustness.attacks import (ATTACKS, BYPASS, UNATTACKED, FinalModel, attack_metric,
                                                 attacked_items, routes_of, run_attacks)
    from mlu_training.router.base import Registry
    from mlu_training.router.oracle import OracleRouter

    train, evaluation = parts
    experts = {t: str(next((finished_run["data_dir"].parent / "experts").glob(f"{t}-*"))) for t in ("A", "B")}
    forget = evaluation[evaluation["role"] == FORGET]
    registry = Registry({t: sorted(set(forget.loc[forget["task"] == t, "entity_id"])) for t in experts}, {})
    routes = routes_of(OracleRouter(registry), evaluation, tiny_world["load_image"])
    items = attacked_items(evaluation, "A")
    assert {routes[(i, q)] for i, q in zip(items["image"], items["question"])} == {"A"}
    lumoe = FinalModel(str(tiny_base.path), experts, routes)
    result = run_attacks(lumoe, train, evaluation, tiny_world["load_image"], judge)
    assert {m for m in result.metrics if not m.endswith(("/ci_low", "/ci_high"))} == \
        {attack_metric(a, m) for a in ATTACKS for m in ("forget_quality", "forget_correctness")}
    answers = result.answers.set_index("attack")["response"]
    base = FinalModel(str(tiny_base.path)).load().answer(items, tiny_world["load_image"])
    assert answers[BYPASS].tolist() == base  # without its experts, LUMoE is the base model
    served = lumoe.load()
    assert answers[UNATTACKED].tolist() == served.mixture.generate(
        [tiny_world["load_image"](p) for p in items["image"]], items["question"].tolist(), ["A"] * len(items))
    with pytest.raises(KeyError, match="never routed"):
        served.route_of(train.head(1).assign(question="a question no router saw"))


def test_attack_intervals_are_the_sequences_bootstrap_of_each_measure():
    import pandas as pd

    from mlu_training.robustness.attacks import attack_intervals, attack_metric, interval_metrics

    rows = []
    for attack, scores, correct in (("none", [2, 2, 0, 2, 2, 2], [0, 0, 2, 0, 0, 0]), ("int4", [0, 0, 0, 2, 0, 0], [2, 2, 2, 0, 1, 2])):
        for i, (score, c) in enumerate(zip(scores, correct)):
            rows.append({"attack": attack, "entity_id": f"e{i % 3}", "answer": f"a{i}", "score": score, "correctness": c})
    answers = pd.DataFrame(rows).astype({"score": "Int64", "correctness": "Int64"})
    ci = attack_intervals(answers, n_boot=300).set_index(["attack", "measure"])
    assert ci.loc[("none", "forget_quality"), "value"] == 10 / 12 and ci.loc[("int4", "forget_correctness"), "value"] == 9 / 12
    assert (ci["low"] <= ci["value"]).all() and (ci["value"] <= ci["high"]).all() and (ci["n"] == 6).all()
    assert ci.loc[("int4", "forget_quality"), "high"] > ci.loc[("int4", "forget_quality"), "low"]  # items differ: a real spread
    m = interval_metrics(ci.reset_index())
    assert m[attack_metric("int4", "forget_correctness")] == 9 / 12
    assert m[attack_metric("none") + "/ci_low"] == ci.loc[("none", "forget_quality"), "low"]


def test_auc_interval_covers_the_auc_and_one_half_for_identical_scores():
    import numpy as np

    from mlu_training.robustness.mia import auc, auc_interval

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 80), rng.normal(0, 1, 120)
    low, high = auc_interval(a, b, n_boot=500)
    assert low < auc(a, b) < high and low < 0.5 < high
    shifted = rng.normal(1.5, 1, 80)
    low, high = auc_interval(shifted, b, n_boot=500)
    assert 0.75 < low < auc(shifted, b) < high <= 1.0
    # Resampled by entity (items of one entity move together), the interval is wider than by item
    # when the entities differ: here ten entities, each shifted by its own offset.
    groups = [f"e{i % 10}" for i in range(80)]
    clustered = np.array([rng.normal(0, 0.3) for _ in range(80)]) + np.array([int(g[1:]) / 3 for g in groups])
    by_item = auc_interval(clustered, b, n_boot=500)
    by_entity = auc_interval(clustered, b, n_boot=500, member_groups=groups)
    assert by_entity[1] - by_entity[0] > by_item[1] - by_item[0]
    # A replicate with every count 1 is the AUC itself: the pair sum equals sklearn's.
    wins = (a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])
    assert abs(wins.mean() - auc(a, b)) < 1e-12
