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



def assert_stopped_naming(result, tmp_path, stops_at: str, named: list[str], checks: set[str]) -> None:
    """The graph stopped at `stops_at`, wrote nothing from there on, and its failure (the failing
    checks' examples, or the error) names every piece of `named`."""
    assert not result.success
    step, message = failed_step(result)
    assert step == stops_at
    assert not stored(tmp_path) & set(ORDER[ORDER.index(stops_at):]), "nothing at or after the failing asset is written"
    if checks:
        failures = failed_checks(result)
        assert set(failures) == checks
        text = json.dumps([f["examples"].value for f in failures.values()], ensure_ascii=False)
    else:
        text = message
    for piece in named:
        assert piece in text, (piece, text[:2000])

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
    assert len(checks) == 20 and all(c.passed for c in checks)
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
    assert_stopped_naming(result, tmp_path, stops_at, named, checks)
    # Fix the file (a fresh copy of the official content, same place): the graph passes.
    make_release_copy(official_tree, copy)
    fixed = materialize(tmp_path, mlubench_path=copy, selection=ORDER[:-1])
    assert fixed.success and stored(tmp_path) >= set(ORDER[:-1])


def _extra_turn(tree):
    edit_json(tree, "MLUBench/Tasks/TaskC/taskC_forget.json",
              lambda d: d[7]["conversations"].append({"from": "human", "value": "And its name?"}))


def _empty_task_file(tree):
    edit_json(tree, "MLUBench/Tasks/TaskD/taskD_retain.json", lambda d: d.clear())


def _empty_eval_side(tree):
    for rel in ["tasks/TaskC/taskC_retain.json"] + [f"tasks/TaskC/other_types_taskC/taskC_retain_{k}.json" for k in range(1, 5)]:
        edit_json(tree, rel, lambda d: d.clear())


def _entity_under_two_classes(tree):
    """An entity of task A's forget side appears again in task B's retain file, under B's class."""
    forget_a = json.loads((tree / "MLUBench/Tasks/TaskA/taskA_forget.json").read_text(encoding="utf-8"))
    _, cls_a, entity, _ = forget_a[0]["image"].split("/")

    def change(d):
        other = next(r for r in d if r["image"].split("/")[1] != cls_a)
        _, cls_b, _, file = other["image"].split("/")
        other["image"] = f"downloaded_images/{cls_b}/{entity}/{file}"
    edit_json(tree, "MLUBench/Tasks/TaskB/taskB_retain.json", change)


def _big_ben_twice(tree):
    def change(d):
        r = next(r for r in d if r["image"].split("/")[2] == "Big_Ben")
        r["image"] = r["image"].replace("/Big_Ben/", "/Big Ben/")
    edit_json(tree, "MLUBench/Tasks/TaskB/taskB_forget.json", change)


def _nfd_duplicate(tree):
    import unicodedata

    for rel in ("MLUBench/Tasks/TaskA/taskA_forget.json", "MLUBench/Tasks/TaskA/taskA_retain.json",
                "MLUBench/Tasks/TaskB/taskB_forget.json", "MLUBench/Tasks/TaskB/taskB_retain.json",
                "MLUBench/Tasks/TaskC/taskC_forget.json", "MLUBench/Tasks/TaskC/taskC_retain.json",
                "MLUBench/Tasks/TaskD/taskD_forget.json", "MLUBench/Tasks/TaskD/taskD_retain.json"):
        data = json.loads((tree / rel).read_text(encoding="utf-8"))
        hit = next((r for r in data if unicodedata.normalize("NFD", r["image"]) != r["image"]), None)
        if hit:
            edit_json(tree, rel, lambda d: d.append({**hit, "image": unicodedata.normalize("NFD", hit["image"])}))
            return
    raise AssertionError("no image path with a composed character in the release")


def _zero_width_answer(tree):
    edit_json(tree, "tasks/TaskA/taskA_forget.json", lambda d: d[2]["conversations"][1].update(value="\u200b\u200d"))


def _huge_answer(tree):
    edit_json(tree, "MLUBench/Tasks/TaskB/taskB_retain.json", lambda d: d[4]["conversations"][1].update(value="a" * 20_000_000))


# name: (edit, the asset that stops, what the failure names, checks that fail)
CONTRADICTIONS = {
    "extra conversation turn": (_extra_turn, "entity_catalog",
                                ["MLUBench/Tasks/TaskC/taskC_forget.json", "record 7", "conversations[2]", "got 3"], set()),
    "empty task file": (_empty_task_file, "entity_catalog",
                        ["MLUBench/Tasks/TaskD/taskD_retain.json", "holds no records"], set()),
    "empty evaluation side": (_empty_eval_side, "qa_pairs", ["tasks/TaskC/taskC_retain.json", "holds no records"], set()),
    "entity under two classes": (_entity_under_two_classes, "validated_qa_pairs",
                                 ["MLUBench/Tasks/", "field image"],
                                 {"entity_one_class", "entity_one_task_side"}),
    "Big Ben beside Big_Ben": (_big_ben_twice, "validated_qa_pairs", ["MLUBench/Tasks/TaskB/taskB_forget.json", "Big Ben/"],
                               {"entity_spelling_unique"}),
    "NFD duplicate record": (_nfd_duplicate, "validated_qa_pairs", ["MLUBench/Tasks/Task", "field image+question"],
                             {"image_question_unique_per_file"}),
    "zero-width answer": (_zero_width_answer, "validated_qa_pairs", ["tasks/TaskA/taskA_forget.json", "record 2"],
                          {"answer_not_empty"}),
    "20 MB answer": (_huge_answer, "validated_qa_pairs", ["MLUBench/Tasks/TaskB/taskB_retain.json", "record 4",
                                                          "20,000,000 characters"], {"answer_not_too_long"}),
}


@pytest.mark.parametrize("case", list(CONTRADICTIONS))
def test_release_contradictions_are_blocked_with_their_place(tmp_path, official_tree, case):
    """Bad data the first checks let through (issue #17): each stops the graph by itself, naming
    the file and record, and nothing at or after the failing asset is stored."""
    edit, stops_at, named, checks = CONTRADICTIONS[case]
    copy = make_release_copy(official_tree, tmp_path / "release", edit=edit)
    result = materialize(tmp_path, mlubench_path=copy, selection=ORDER[:5])
    assert_stopped_naming(result, tmp_path, stops_at, named, checks)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: what a decompression bomb looks like to open()."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_corrupt_official_image_is_reported_by_path(tmp_path):
    images = tmp_path / "downloaded_images"
    good = images / "Animals/Dog/image_20241017_101505_6.jpg"
    bad = images / "Animals/Dog/image_20241017_101651_15.jpg"
    good.parent.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good, format="JPEG")
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    bomb = images / "Animals/Dog/image_20241017_101515_7.jpg"  # 100,000 x 100,000 pixels in 67 bytes
    bomb.write_bytes(_png_header(100_000, 100_000))
    result = materialize(tmp_path, images_dir=images, selection=ORDER[:5])
    assert not result.success
    step, message = failed_step(result)
    assert step == "raw_crawls" and str(bad) in message and str(good) not in message
    assert f"{bomb}: DecompressionBombError" in message  # once, it failed without a path
    bomb.unlink()
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
