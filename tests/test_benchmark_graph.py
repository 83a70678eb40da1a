"""The benchmark group materialized for real, in process, on a throwaway instance and stores;
and real broken copies of the release stopping it at the right asset or check."""

import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from conftest import edit_json, make_release_copy, test_resources
from PIL import Image

from mlu_assets.benchmark import assets as benchmark_assets

ORDER = ["mlubench_release", "entity_catalog", "qa_pairs", "raw_crawls", "validated_qa_pairs", "benchmark_splits"]


def materialize(tmp_path: Path, mlubench_path=None, images_dir=None, selection=None, cache=None):
    resources = test_resources(tmp_path, benchmark={
        "cache_dir": str(cache or tmp_path / "cache"), "mlubench_path": str(mlubench_path) if mlubench_path else None,
        "images_dir": str(images_dir) if images_dir else None})
    return dg.materialize(
        dg.load_assets_from_modules([benchmark_assets]), resources=resources, selection=selection,
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )


def stored(tmp_path: Path) -> set[str]:
    return {p.stem for p in (tmp_path / "data" / "tables").glob("*.*")}


def failed_step(result) -> tuple[str, str]:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_key, failure.step_failure_data.user_failure_data.description if failure.step_failure_data.user_failure_data else str(failure.step_failure_data.error)


def failed_checks(result) -> dict[str, dict]:
    return {e.check_name: e.metadata for e in result.get_asset_check_evaluations() if not e.passed}


def test_whole_group_in_process(tmp_path):
    result = materialize(tmp_path)
    assert result.success
    catalog = result.output_for_node("entity_catalog")
    qa = result.output_for_node("qa_pairs")
    crawls = result.output_for_node("raw_crawls")
    splits = result.output_for_node("benchmark_splits")
    assert len(catalog) == 127 and len(qa) == 18159 and len(crawls) == 2453
    assert result.output_for_node("validated_qa_pairs").equals(qa)
    assert splits["entity_id"].nunique() == 8  # tiny: one entity per task side
    assert set(splits["split"]) == {"train", "eval"}
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 14 and all(c.passed for c in checks)
    # Row counts are metadata the UI shows.
    meta = {m.asset_key.to_user_string(): m.metadata for m in result.get_asset_materialization_events() for m in [m.materialization]}
    assert meta["qa_pairs"]["num_rows"].value == 18159
    assert meta["raw_crawls"]["num_images"].value == 2453
    assert meta["benchmark_splits"]["dagster/row_count"].value == len(splits)
    assert stored(tmp_path) == set(ORDER)
    # The splits are an MLflow run with two datasets carrying the digest.
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db").get_run(meta["benchmark_splits"]["mlflow_run_id"].value)
    assert run.data.tags["mlu.profile"] == "tiny"
    assert run.data.tags["mlu.data_digest"] == meta["benchmark_splits"]["data_digest"].value
    assert sorted(i.dataset.name for i in run.inputs.dataset_inputs) == ["mlubench-tiny-eval", "mlubench-tiny-train"]
    assert run.data.metrics["rows/train"] + run.data.metrics["rows/eval"] == len(splits)


def _drop_answer(tree):
    edit_json(tree, "MLUBench/Tasks/TaskB/taskB_retain.json", lambda d: d[3]["conversations"][1].pop("value"))


def _duplicate_record(tree):
    edit_json(tree, "MLUBench/Tasks/TaskA/taskA_forget.json", lambda d: d.append(dict(d[0])))


def _unknown_entity(tree):
    def change(d):  # same class, an entity the task files never mention
        cls = d[0]["image"].split("/")[1]
        d[0]["image"] = f"downloaded_images/{cls}/Unicorn/image_1.jpg"
    edit_json(tree, "tasks/TaskC/taskC_retain.json", change)


def _parent_path(tree):
    def change(d):
        d[5]["image"] = "downloaded_images/../Animals/Dog/image_1.jpg"
    edit_json(tree, "MLUBench/Tasks/TaskA/taskA_forget.json", change)


def _truncate(tree):
    path = tree / "tasks/TaskD/taskD_forget.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# name: (edit, the asset that stops, what the failure names, checks that fail)
BROKEN = {
    "missing answer": (_drop_answer, "entity_catalog",
                       ["MLUBench/Tasks/TaskB/taskB_retain.json", "record 3", "field conversations[1].value", "missing"], set()),
    "duplicated record": (_duplicate_record, "validated_qa_pairs",
                          ["MLUBench/Tasks/TaskA/taskA_forget.json", "record 2442"], {"qa_ids_unique", "image_question_unique_per_file"}),
    "unknown entity": (_unknown_entity, "validated_qa_pairs",
                       ["tasks/TaskC/taskC_retain.json", "record 0", "field image", "Unicorn"], {"entity_in_catalog"}),
    "image path with ..": (_parent_path, "validated_qa_pairs",
                           ["MLUBench/Tasks/TaskA/taskA_forget.json", "record 5", "field image"],
                           {"image_path_relative", "image_path_no_parent", "image_in_raw_crawls", "class_known",
                            "entity_in_catalog", "class_question_known", "variant_known"}),  # ".." is no class
    "truncated JSON": (_truncate, "qa_pairs", ["tasks/TaskD/taskD_forget.json", "not valid JSON", "line"], set()),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_release_stops_at_the_right_place_then_passes_when_fixed(tmp_path, official_tree, case):
    edit, stops_at, named, checks = BROKEN[case]
    copy = make_release_copy(official_tree, tmp_path / "release", edit=edit)
    result = materialize(tmp_path, mlubench_path=copy)
    assert not result.success
    step, message = failed_step(result)
    assert step == stops_at
    downstream = ORDER[ORDER.index(stops_at):]
    assert not stored(tmp_path) & set(downstream), "nothing at or after the failing asset is written"
    if checks:
        failures = failed_checks(result)
        assert set(failures) == checks
        text = json.dumps([f["examples"].value for f in failures.values()], ensure_ascii=False)
    else:
        text = message
    for piece in named:
        assert piece in text, (piece, text)
    # Fix the file (a fresh copy of the official content, same place): the graph passes.
    make_release_copy(official_tree, copy)
    fixed = materialize(tmp_path, mlubench_path=copy, selection=ORDER[:-1])
    assert fixed.success and stored(tmp_path) >= set(ORDER[:-1])


def test_corrupt_official_image_is_reported_by_path(tmp_path):
    images = tmp_path / "downloaded_images"
    good = images / "Animals/Dog/image_20241017_101505_6.jpg"
    bad = images / "Animals/Dog/image_20241017_101651_15.jpg"
    good.parent.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good, format="JPEG")
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    result = materialize(tmp_path, images_dir=images, selection=ORDER[:5])
    assert not result.success
    step, message = failed_step(result)
    assert step == "raw_crawls" and str(bad) in message and str(good) not in message
    assert not stored(tmp_path) & {"raw_crawls", "validated_qa_pairs"}
    Image.new("RGB", (40, 30), (10, 200, 10)).save(bad, format="JPEG")
    fixed = materialize(tmp_path, images_dir=images, selection=ORDER[:5])
    assert fixed.success
    crawls = fixed.output_for_node("raw_crawls").set_index("image")
    assert crawls.loc["downloaded_images/Animals/Dog/image_20241017_101651_15.jpg", "source"] == "official"
    assert crawls.loc["downloaded_images/Animals/Dog/image_20241017_101651_15.jpg", "width"] == 40
    assert (crawls["source"] == "official").sum() == 2


def test_a_missing_images_dir_fails_with_the_setting_named(tmp_path):
    """MLU_IMAGES_DIR given but wrong: it stops raw_crawls, never quietly renders every image."""
    result = materialize(tmp_path, images_dir=tmp_path / "downloaded_imgaes", selection=ORDER[:4])
    assert not result.success
    step, message = failed_step(result)
    assert step == "raw_crawls" and message.startswith(f"MLU_IMAGES_DIR={tmp_path / 'downloaded_imgaes'}: no such folder")
    assert "raw_crawls" not in stored(tmp_path)
