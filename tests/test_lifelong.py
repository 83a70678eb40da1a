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
    assert list(result.losses) == ["B", "A"] and all(len(v) == 2 for v in result.losses.values())
    assert result.evaluations["score"].notna().all()  # the local judge is never missing


def test_stability_and_matrices_from_scores():
    rows = []
    # Forget quality of task A: 1.0 right after A, 0.5 at the end; task B: 0.25 then 0.25.
    for unlearned, task, scores in [("A", "A", [2, 2]), ("B", "A", [1, 1]), ("B", "B", [1, 0])]:
        for s in scores:
            rows.append({"unlearned": unlearned, "task": task, "role": "forget", "variant": 0, "score": s, "rouge_l": 0.0})
    frame = pd.DataFrame(rows).astype({"score": "Int64"})
    result = SequenceResult(UnlearningConfig(method="ga", order="AB"), frame)
    m = result.matrix("forget_quality")
    assert m.loc["A", "UA"] == 1.0 and m.loc["A", "UB"] == 0.5 and pd.isna(m.loc["B", "UA"]) and m.loc["B", "UB"] == 0.25
    assert result.stability("forget_quality") == pytest.approx(0.5)  # |1.0 - 0.5| + |0.25 - 0.25|


def test_missing_judgements_are_left_out_not_zero():
    frame = pd.DataFrame({"unlearned": ["A"] * 3, "task": ["A"] * 3, "role": ["retain"] * 3, "variant": [0] * 3,
                          "score": pd.array([2, None, None], dtype="Int64"), "rouge_l": [1.0, 0.0, 0.0]})
    result = SequenceResult(UnlearningConfig(method="ga", order="A"), frame)
    assert result.matrix("utility").loc["A", "UA"] == 1.0
    assert result.metrics()["judge/missing"] == 2.0


def test_orders_must_be_permutations(data, tmp_path):
    train, evaluation, load = data
    with pytest.raises(ValueError, match="permutation"):
        run_sequence("unused", train, evaluation, load, LocalJudge(), UnlearningConfig(method="ga", order="AAB"), tmp_path)
    with pytest.raises(ValueError, match="permutation"):
        run_sequence("unused", train, evaluation, load, LocalJudge(), UnlearningConfig(method="ga", order="AZ"), tmp_path)
