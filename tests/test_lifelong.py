"""The sequential protocol: merging, resuming after a crash, the X-UY metrics and stability."""

import pandas as pd
import pytest
import torch

from mlu_training.judge import LocalJudge
from mlu_training.adapters import AdapterTraining
from mlu_training.lifelong import UnlearningConfig, run_sequence
from mlu_training.sequences import SequenceResult
from mlu_training.lora import attach_lora
from mlu_training.models.vlm import VisionLanguageModel

CONFIG = UnlearningConfig(method="gd", order="BA", training=AdapterTraining(steps=2, batch_size=4, lr=1e-3))


@pytest.fixture(scope="module")
def data(tiny_world):
    splits = tiny_world["splits"]
    train = splits[(splits["split"] == "train") & splits["task"].isin(["A", "B"])]
    evaluation = splits[(splits["split"] == "eval") & splits["task"].isin(["A", "B"])].groupby(["task", "role"]).head(5)
    return train, evaluation, tiny_world["load_image"]


def test_merged_backbone_answers_like_the_adapter(tiny_base, tiny_world):
    vlm = VisionLanguageModel.load(tiny_base.path)
    row = tiny_world["splits"].iloc[0]
    batch = vlm.training_batch([tiny_world["load_image"](row["image"])], [row["question"]], [row["answer"]])
    model = attach_lora(vlm.model, "both", 4, 4, seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
        adapted = model(**batch).logits
        merged = model.merge_and_unload()
        assert not any("lora" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(**batch).logits, adapted, atol=1e-4)
        assert not torch.allclose(VisionLanguageModel.load(tiny_base.path).model(**batch).logits, adapted, atol=1e-3)


def test_a_crash_resumes_from_the_last_finished_step_with_the_same_numbers(tiny_base, data, tmp_path):
    train, evaluation, load = data
    whole = run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(), CONFIG, tmp_path / "whole")
    assert whole.resumed_from == 0 and len(whole.evaluations) == 2 * len(evaluation)

    def crash(index, task, phase):
        if (index, phase) == (1, "train"):
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(), CONFIG, tmp_path / "crashed", crash)
    assert (tmp_path / "crashed/step-0-B/DONE").is_file() and not (tmp_path / "crashed/step-1-A/DONE").exists()
    seen = []
    resumed = run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(), CONFIG, tmp_path / "crashed",
                           lambda i, t, p: seen.append((i, p)))
    assert resumed.resumed_from == 1 and (0, "train") not in seen and (1, "train") in seen
    pd.testing.assert_frame_equal(resumed.evaluations, whole.evaluations)
    assert resumed.losses == whole.losses
    assert resumed.metrics() == whole.metrics()
    # Only the newest checkpoint is kept.
    assert not (tmp_path / "crashed/step-0-B/model").exists() and (tmp_path / "crashed/step-1-A/model").is_dir()
    # Nothing left to do: a third call only reads the results.
    again = run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(), CONFIG, tmp_path / "crashed")
    assert again.resumed_from == 2 and again.metrics() == whole.metrics()


def test_metric_names_follow_the_order(tiny_base, data, tmp_path):
    train, evaluation, load = data
    result = run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(), CONFIG, tmp_path / "run")
    names = set(result.metrics())
    # Order BA: B is evaluated after B and after A; A only after A (X-UY needs X no later than Y).
    for kind in ("forget_quality", "utility"):
        assert {f"{kind}/B-UB", f"{kind}/B-UA", f"{kind}/A-UA"} <= names
        assert f"{kind}/A-UB" not in names
        assert f"stability/{kind}" in names
    assert {"rouge_l/forget/B-UB", "rouge_l/retain/A-UA", "paraphrase/forget_quality/v0", "judge/missing"} <= names
    # Forgetting on its own: the utility rubric on forget items, for every step, with its interval.
    assert {"forget_correctness/B-UB", "forget_correctness/B-UA", "forget_correctness/A-UA"} <= names
    assert "forget_correctness/A-UB" not in names and "forget_correctness/A-UA/ci_low" in names
    forget = result.evaluations[result.evaluations["role"] == "forget"]
    assert forget["correctness"].notna().all() and (forget["correctness"] >= 0).all()
    assert forget["correctness"].isin([0, 1, 2]).all()
    cell = forget[(forget["task"] == "B") & (forget["unlearned"] == "B")]["correctness"]
    assert result.metrics()["forget_correctness/B-UB"] == pytest.approx(cell.sum() / (2 * len(cell)))
    assert list(result.losses) == ["B", "A"] and all(len(v) == 2 for v in result.losses.values())
    # Every score has its 95 % interval; the continual-learning summaries are there with theirs.
    metrics = result.metrics()
    for name, value in metrics.items():
        if name.split("/")[0] in ("forget_quality", "utility") and not name.endswith(("ci_low", "ci_high")):
            assert metrics[f"{name}/ci_low"] <= value <= metrics[f"{name}/ci_high"], name
    for kind in ("forget_quality", "utility"):
        for summary in ("average", "last", "bwt", "worst_drop"):
            assert f"summary/{kind}/{summary}/ci_low" in metrics
        final = [metrics[f"{kind}/{x}-UA"] for x in "BA" if f"{kind}/{x}-UA" in metrics]
        assert metrics[f"summary/{kind}/average"] == pytest.approx(sum(final) / len(final))
        assert metrics[f"summary/{kind}/bwt"] == pytest.approx(metrics[f"{kind}/B-UA"] - metrics[f"{kind}/B-UB"])
    assert result.evaluations["score"].notna().all()  # the local judge is never missing


def test_stability_and_matrices_from_scores():
    rows = []
    # Forget quality of task A: 1.0 right after A, 0.5 at the end; task B: 0.25 then 0.25.
    for unlearned, task, scores in [("A", "A", [2, 2]), ("B", "A", [1, 1]), ("B", "B", [1, 0])]:
        for s in scores:
            rows.append({"unlearned": unlearned, "task": task, "role": "forget", "variant": 0, "score": s, "rouge_l": 0.0,
                         "entity_id": f"e{task}", "answer": f"answer {len(rows) % 2}"})
    frame = pd.DataFrame(rows).astype({"score": "Int64"})
    result = SequenceResult(UnlearningConfig(method="ga", order="AB"), frame)
    m = result.matrix("forget_quality")
    assert m.loc["A", "UA"] == 1.0 and m.loc["A", "UB"] == 0.5 and pd.isna(m.loc["B", "UA"]) and m.loc["B", "UB"] == 0.25
    assert result.stability("forget_quality") == pytest.approx(0.5)  # |1.0 - 0.5| + |0.25 - 0.25|


def test_missing_judgements_are_left_out_not_zero():
    frame = pd.DataFrame({"unlearned": ["A"] * 3, "task": ["A"] * 3, "role": ["retain"] * 3, "variant": [0] * 3,
                          "score": pd.array([2, None, None], dtype="Int64"), "rouge_l": [1.0, 0.0, 0.0],
                          "entity_id": ["e1", "e1", "e2"], "answer": ["x", "y", "z"]})
    result = SequenceResult(UnlearningConfig(method="ga", order="A"), frame)
    assert result.matrix("utility").loc["A", "UA"] == 1.0
    assert result.metrics()["judge/missing"] == 2.0
    assert result.intervals["utility/A-UA"].n_clusters == 1  # the missing ones are not a cluster either


def test_orders_must_be_permutations(data, tmp_path):
    train, evaluation, load = data
    with pytest.raises(ValueError, match="permutation"):
        run_sequence("unused", train, evaluation, load, LocalJudge(), UnlearningConfig(method="ga", order="AAB"), tmp_path)
    with pytest.raises(ValueError, match="permutation"):
        run_sequence("unused", train, evaluation, load, LocalJudge(), UnlearningConfig(method="ga", order="AZ"), tmp_path)


def test_the_leaderboard_shows_every_score_with_its_interval():
    from mlu_training.report import for_display, leaderboard

    metrics = {"forget_quality/A-UA": 0.5, "forget_quality/A-UB": 0.25, "forget_quality/B-UB": 0.75,
               "utility/A-UA": 1.0, "utility/A-UB": 0.5, "utility/B-UB": 0.5,
               "summary/forget_quality/average": 0.5, "summary/forget_quality/average/ci_low": 0.2,
               "summary/forget_quality/average/ci_high": 0.8, "summary/utility/worst_drop": 0.5,
               "summary/utility/worst_drop/ci_low": 0.0, "summary/utility/worst_drop/ci_high": 1.0}
    runs = {"ga": {"method": "ga", "model": "tiny", "order": "AB", "tasks": ["A", "B"], "metrics": metrics}}
    board = leaderboard(runs)
    assert board.loc[0, "forget quality"] == 0.5 and board.loc[0, "utility"] == 0.5  # means of the last column
    shown = for_display(board, ["method", "forget quality", "utility", "worst drop utility"])
    assert list(shown.iloc[0]) == ["ga", "0.50 [0.20, 0.80]", "0.50", "0.50 [0.00, 1.00]"]  # no interval logged: none shown


def test_each_seed_is_a_sequence_of_its_own_and_the_report_pools_them(tiny_base, data, tmp_path):
    from dataclasses import replace
    from types import SimpleNamespace

    from mlu_training.lifelong import sequence_key
    from mlu_training.mlflow_store import MlflowStore
    from mlu_training.report import collect_runs
    from mlu_training.sequences import logged_run, sequence_tags

    train, evaluation, load = data
    store = MlflowStore(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    base = SimpleNamespace(model_uri="models:/mlu-base-model/1", name="tiny", seed=None)  # a checkpoint's
    metrics, keys = {}, {}
    for seed in (0, 1):
        config = replace(CONFIG, training=replace(CONFIG.training, seed=seed))
        inputs = (config, "base", "data", "items", "judge")
        keys[seed] = (sequence_key(*inputs), sequence_key(*inputs, ignore_seed=True))
        result = run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(), config, tmp_path / str(seed))
        metrics[seed] = result.metrics()
        tags = sequence_tags("unlearning_sequence", "gd", config.order, "tiny", base, keys[seed][0], "judge",
                             seed=seed, config_key=keys[seed][1])
        logged_run(store, result, tags, tmp_path / f"artifacts-{seed}", {"router/recall/UB": (0.6, 0.8)[seed]})
    assert keys[0][0] != keys[1][0] and keys[0][1] == keys[1][1]  # two sequences, one configuration
    again = run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(),
                         replace(CONFIG, training=replace(CONFIG.training, seed=1)), tmp_path / "1")
    assert again.resumed_from == 2  # a finished seed is read back, not run again

    [entry] = collect_runs(store, "tiny").values()
    assert entry["seeds"] == ["0", "1"]
    pooled = entry["metrics"]
    cells = [n for n in metrics[0] if n.split("/")[0] in ("forget_quality", "utility") and "/ci_" not in n]
    assert cells
    for name in cells:  # the same items judged under each seed: the pooled score is the mean over seeds
        assert pooled[name] == pytest.approx((metrics[0][name] + metrics[1][name]) / 2)
        assert pooled[f"{name}/ci_low"] <= pooled[name] <= pooled[f"{name}/ci_high"]
    assert pooled["router/recall/UB"] == pytest.approx(0.7)  # a run-level measure: the mean of the seeds' runs


def test_base_models_taught_with_other_seeds_are_pooled_a_level_above_the_sequence_seeds(tiny_base, tiny_world, data,
                                                                                         tmp_path):
    """The base model taught again with another seed: another key, the same seedless key; each
    keeps the items it knows; the sequences on both pool in the report, the base seed a column of
    its own. A run found again takes today's tags (a config key newer than the run)."""
    from types import SimpleNamespace

    from mlu_training.data.splits import splits_digest
    from mlu_training.lifelong import sequence_key
    from mlu_training.mlflow_store import MlflowStore
    from mlu_training.models.base_model import build_base_model
    from mlu_training.models.knowledge import filter_known, seedless_items_key
    from mlu_training.models.sft import SFTConfig
    from mlu_training.report import collect_runs, leaderboard
    from mlu_training.sequences import logged_run, sequence_tags

    other = build_base_model(tiny_world["splits"], tiny_world["load_image"], tiny_world["digest"], tmp_path / "models",
                             sft=SFTConfig(steps=120, batch_size=16, seed=1))
    assert (tiny_base.seed, other.seed) == (0, 1)
    assert other.key != tiny_base.key and other.config_key == tiny_base.config_key
    train, evaluation, load = data
    store = MlflowStore(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    metrics, kept = {}, {}
    for base in (tiny_base, other):
        vlm = VisionLanguageModel.load(base.path)
        kept[base.seed] = filter_known(vlm, evaluation, load, LocalJudge(), 2, 16, 32).kept
        ref = SimpleNamespace(model_uri=f"models:/mlu-base-model/{base.seed + 1}", name="tiny", seed=base.seed)
        result = run_sequence(str(base.path), train, kept[base.seed], load, LocalJudge(), CONFIG, tmp_path / f"on-{base.seed}")
        metrics[base.seed] = result.metrics()
        tags = sequence_tags("unlearning_sequence", "gd", CONFIG.order, "tiny", ref,
                             sequence_key(CONFIG, base.key, "data", splits_digest(kept[base.seed]), "judge"), "judge",
                             config_key=sequence_key(CONFIG, base.config_key, "data", seedless_items_key(kept[base.seed]),
                                                     "judge", ignore_seed=True))
        assert tags["mlu.base_seed"] == str(base.seed)
        first = logged_run(store, result, {**tags, "mlu.config_key": "before-the-upgrade"}, tmp_path / f"a-{base.seed}")
        assert logged_run(store, result, tags, tmp_path / f"b-{base.seed}") == first  # found again, not logged twice
        assert store.client.get_run(first).data.tags["mlu.config_key"] == tags["mlu.config_key"]
    assert seedless_items_key(kept[0]) == seedless_items_key(kept[1])  # the same filter, whatever each kept
    stricter = filter_known(VisionLanguageModel.load(other.path), evaluation, load, LocalJudge(), 1, 16, 32).kept
    assert seedless_items_key(stricter) != seedless_items_key(kept[1])  # another threshold: another configuration
    stored_before = kept[0].copy()
    stored_before.attrs = {}  # a table kept before the filter's settings were: its own digest, pooled with nothing
    assert seedless_items_key(stored_before) == splits_digest(stored_before)
    [entry] = collect_runs(store, "tiny").values()
    assert (entry["seeds"], entry["base_seeds"]) == (["0"], ["0", "1"])
    assert leaderboard({"gd": entry}).loc[0, "seeds"] == "0 × base 0,1"
    for name in (n for n in metrics[0] if n.split("/")[0] in ("forget_quality", "utility") and "/ci_" not in n):
        if name in metrics[1]:  # each base model's own items: the pooled score lies between the two
            low, high = sorted((metrics[0][name], metrics[1][name]))
            assert low - 1e-9 <= entry["metrics"][name] <= high + 1e-9
            assert entry["metrics"][f"{name}/ci_low"] <= entry["metrics"][name] <= entry["metrics"][f"{name}/ci_high"]


def test_the_reference_is_the_model_before_the_step_or_the_original(tiny_base, data, tmp_path):
    """NPO against `previous` (the backbone with the step's adapter off) or `original` (the base
    model): the same reference at the first step, so the same losses; different ones after the
    first merge."""
    from dataclasses import replace

    train, evaluation, load = data
    config = replace(CONFIG, method="npo")
    runs = {ref: run_sequence(str(tiny_base.path), train, evaluation, load, LocalJudge(), replace(config, reference=ref),
                              tmp_path / ref) for ref in ("previous", "original")}
    assert runs["previous"].losses["B"] == pytest.approx(runs["original"].losses["B"])
    assert runs["previous"].losses["A"] != pytest.approx(runs["original"].losses["A"])
    with pytest.raises(ValueError, match="reference 'bogus': choose previous or original"):
        replace(config, reference="bogus").validate({"A", "B"})
