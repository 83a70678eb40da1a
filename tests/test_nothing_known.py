"""A base model that knows none (or few) of the evaluation items is an outcome, not a crash: the
knowledge filter keeps nothing of a task, the sequences and LUMoE record "nothing to unlearn" with
the reason, `mlu run` finishes, and the report shows the reason where the numbers would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from mlu_training.adapters import AdapterTraining
from mlu_training.evaluation import score_answers
from mlu_training.judge.local import LocalJudge
from mlu_training.lifelong import UnlearningConfig, run_sequence
from mlu_training.sequences import NOTHING_KNOWN, NOTHING_KNOWN_FORGET, SequenceResult, nothing_to_unlearn

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluation(tiny_world):
    s = tiny_world["splits"]
    return s[s["split"] == "eval"].reset_index(drop=True)


def test_nothing_to_unlearn_names_each_task_and_why(evaluation):
    assert nothing_to_unlearn(evaluation, "ABCD") == {}
    no_forget_b = evaluation[~((evaluation["task"] == "B") & (evaluation["role"] == "forget"))]
    assert nothing_to_unlearn(no_forget_b, "ABCD") == {"B": NOTHING_KNOWN_FORGET}
    assert nothing_to_unlearn(evaluation.iloc[0:0], "AB") == {"A": NOTHING_KNOWN, "B": NOTHING_KNOWN}
    assert "knows none of its evaluation items" in NOTHING_KNOWN


def test_every_scorer_takes_an_empty_table(evaluation):
    empty = score_answers(evaluation.iloc[0:0], [], LocalJudge())
    assert empty.empty and {"score", "rouge_l", "response"} <= set(empty.columns)
    frame = empty.assign(unlearned=pd.Series(dtype=object), step=pd.Series(dtype="int64"))
    result = SequenceResult(UnlearningConfig(method="ga"), frame)
    metrics = result.metrics()  # no X-UY cell, no stability: absent, never 0
    assert not any(k.startswith(("forget_quality/", "utility/", "stability/")) for k in metrics)
    assert result.matrix("utility").empty and result.nothing_to_unlearn == dict.fromkeys("ABCD", NOTHING_KNOWN)


def test_a_sequence_over_nothing_known_never_loads_the_model(tiny_world, evaluation, tmp_path):
    splits = tiny_world["splits"]
    config = UnlearningConfig(method="ga", training=AdapterTraining(steps=1, batch_size=2))
    steps = []
    result = run_sequence("/no/model/here", splits[splits["split"] == "train"], evaluation.iloc[0:0],
                          tiny_world["load_image"], LocalJudge(), config, tmp_path, lambda i, t, p: steps.append(p))
    assert result.evaluations.empty and result.nothing_to_unlearn == dict.fromkeys("ABCD", NOTHING_KNOWN)
    assert steps.count(NOTHING_KNOWN) == 4 and (tmp_path / "step-3-D" / "NOTHING_TO_UNLEARN").read_text() == NOTHING_KNOWN


def test_lumoe_over_nothing_known(tiny_world, evaluation):
    from mlu_training.lumoe.sequence import LumoeConfig, router_metrics, run_lumoe_sequence

    result, quality = run_lumoe_sequence("/no/model/here", {t: ("/no/adapter", []) for t in "ABCD"}, {},
                                         evaluation.iloc[0:0], tiny_world["load_image"], LocalJudge(),
                                         lambda vlm, registry: None, LumoeConfig())
    assert result.nothing_to_unlearn == dict.fromkeys("ABCD", NOTHING_KNOWN) and len(quality) == 4
    assert router_metrics(quality) == {f"router/missing/U{t}": 0 for t in "ABCD"}  # nothing routed, nothing else
    assert "judge/missing" in result.metrics()


def test_mlu_run_on_a_random_weight_checkpoint_finishes_and_says_why(tiny_world, tmp_path):
    """`MLU_BASE_MODEL=<random-weight Qwen2.5-VL> MLU_PROFILE=tiny mlu run`, for real: exit 0, and the
    report (HTML and leaderboard) says the model knows none of the items."""
    from mlu_training.models.tiny_families import save_tiny_family
    from mlu_training.texts import REFUSAL_ANSWER

    s = tiny_world["splits"]
    folder = save_tiny_family("qwen2_5_vl", [*s["question"], *s["answer"], REFUSAL_ANSWER], tmp_path / "random-qwen")
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text((PROJECT / "dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, "MLU_BASE_MODEL": str(folder), "MLU_PROFILE": "tiny", "MLU_DATA_DIR": str(tmp_path / "data"),
           "MLU_CACHE_DIR": str(tmp_path / "cache"), "MLU_MLUBENCH_UPSTREAM": "", "DAGSTER_HOME": str(tmp_path / "dagster_home"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "MLU_BASE_MODELS_DIR": str(tmp_path / "base_models"),
           "MLU_REQUESTS_DIR": str(tmp_path / "requests"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(PROJECT)}
    out = subprocess.run([sys.executable, "-m", "mlu_assets.cli", "run", "--methods", "ga,npo,po"], cwd=PROJECT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "nothing to unlearn" in out.stdout  # the leaderboard's note column
    html = (tmp_path / "data" / "report" / "report.html").read_text()
    assert "Nothing to unlearn" in html and f"A, B, C, D: {NOTHING_KNOWN}" in html and "random-qwen" in html
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()], "tags.`mlu.kind` = 'unlearning_sequence'")
    assert {r.data.tags["mlu.method"] for r in runs} == {"ga", "npo", "po"}
    for run in runs:
        assert json.loads(run.data.tags["mlu.nothing_to_unlearn"]) == dict.fromkeys("ABCD", NOTHING_KNOWN)
    lumoe = mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()], "tags.`mlu.kind` = 'lumoe_sequence'")
    assert len(lumoe) == 1 and "mlu.nothing_to_unlearn" in lumoe[0].data.tags


def test_no_questions_get_no_answers(tiny_world, tmp_path):
    """The source of the rouge_score crash: transformers 5 decodes an empty batch as [""], so an
    empty table got one answer, a row with no ground truth (NaN) that ROUGE-L choked on."""
    from mlu_training.models.tiny_families import build_tiny_family

    vlm = build_tiny_family("llava_next", ["Who is this person?"])
    assert vlm.tokenizer.batch_decode([]) == [""]  # transformers' behaviour, guarded against below
    assert vlm.generate([], []) == []
    with pytest.raises(ValueError, match="1 answers for 0 items"):
        score_answers(tiny_world["splits"].iloc[0:0], [""], LocalJudge())
