"""The report says what made it: the profile, the judge of every row (and a warning when they
differ), the release digest and the code version; on the page, in the asset's metadata, on its
MLflow run and in `mlu run`'s leaderboard. Real MLflow (SQLite), the real report asset."""

import subprocess

import dagster as dg
import mlflow
from conftest import test_resources

from mlu_assets.cli import _print_leaderboard
from mlu_assets.evaluation.assets import report
from mlu_training.mlflow_store import MlflowStore
from mlu_training.paths import PROJECT_ROOT

METRICS = {"forget_quality/A-UA": 0.5, "forget_quality/A-UB": 0.25, "forget_quality/B-UB": 0.75,
           "utility/A-UA": 1.0, "utility/A-UB": 0.5, "utility/B-UB": 0.5,
           "stability/forget_quality": 0.25, "stability/utility": 0.5}
DIGEST = "f" * 64


def log_sequence_run(store, method: str, judge: str) -> None:
    tags = {"mlu.kind": "unlearning_sequence", "mlu.method": method, "mlu.order": "AB", "mlu.profile": "tiny",
            "mlu.model": "tiny", "mlu.judge": judge, "mlu.seed": "0", "mlu.config_key": f"key-{method}-{judge}"}
    with store.start_run(f"{method}-AB", tags):
        mlflow.log_metrics(METRICS)


def test_rows_judged_differently_say_so_and_the_report_names_what_made_it(tmp_path, capsys):
    resources = test_resources(tmp_path)
    store = MlflowStore(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    log_sequence_run(store, "ga", "local rubric-v3")
    log_sequence_run(store, "gd", "local rubric-v3")
    log_sequence_run(store, "gd", "gpt-4o at http://127.0.0.1:8000/v1")  # a rerun of one method, another judge
    tables = tmp_path / "data" / "tables"
    tables.mkdir(parents=True)
    (tables / "mlubench_release.json").write_text(f'{{"digest": "{DIGEST}"}}')

    result = dg.materialize([report], resources=resources, instance=dg.DagsterInstance.ephemeral())
    value = result.output_for_node("report")
    judges = {row["method"]: row["judge"] for row in value.leaderboard}
    assert judges == {"ga": "local rubric-v3", "gd": "gpt-4o at http://127.0.0.1:8000/v1"}  # per row

    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True).stdout.strip()
    assert value.provenance == {"profile": "tiny", "release": DIGEST, "code": code,
                                "judges": "gpt-4o at http://127.0.0.1:8000/v1, local rubric-v3"}
    [materialization] = result.get_asset_materialization_events()
    meta = materialization.materialization.metadata
    assert meta["release"].value == DIGEST and meta["code"].value == code and meta["profile"].value == "tiny"
    assert "different judges" in meta["judges_differ"].value
    page = open(value.html, encoding="utf-8").read()
    assert f"release: {DIGEST}" in page and f"code: {code}" in page and "profile: tiny" in page
    assert "<th>judge</th>" in page and "Rows judged by different judges" in page
    tags = mlflow.MlflowClient(store.tracking_uri).get_run(value.mlflow_run_id).data.tags
    assert tags["mlu.release"] == DIGEST and tags["mlu.code"] == code and "local rubric-v3" in tags["mlu.judges"]

    _print_leaderboard(value.leaderboard, value.html, value.provenance)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "method" in line)
    assert "judge" in header  # the column, since the judges differ
    assert "gpt-4o at http://127.0.0.1:8000/v1" in out and f"release: {DIGEST}" in out
    assert "warning: Rows judged by different judges" in out


def test_one_judge_is_named_once_not_per_row(tmp_path, capsys):
    store = MlflowStore(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    log_sequence_run(store, "ga", "local rubric-v3")
    from mlu_training.report import publish_report

    value, board, _ = publish_report(store, "tiny", tmp_path / "report", {"release": DIGEST, "code": "abc"})
    _print_leaderboard(value.leaderboard, value.html, value.provenance)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "method" in line)
    assert "judge" not in header and "judge: local rubric-v3" in out and "warning" not in out


def test_another_task_order_is_a_row_of_its_own():
    from mlu_training.report import method_label

    assert method_label({"mlu.method": "ga", "mlu.order": "ABCD"}) == "ga"
    assert method_label({"mlu.method": "ga", "mlu.order": "CABD"}) == "ga (CABD)"  # never pooled with ABCD's seeds
    assert method_label({"mlu.method": "npo", "mlu.targets": "projector", "mlu.order": "CABD"}) == "npo [projector] (CABD)"
    # LUMoE's later requests extend its order: still LUMoE's row
    assert method_label({"mlu.method": "lumoe", "mlu.order": "A,B,C,D,forget-taylor"}) == "lumoe"
