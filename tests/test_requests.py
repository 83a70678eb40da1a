"""Request files and `mlu request` as a careless or hostile user drives them: ids that are paths,
links, folders, typos, stale refusals, entities already served, image paths out of the release.
Real files, the real sensor through build_sensor_context, the real CLI entry point."""

import json
import os

import dagster as dg
import pytest
from conftest import test_resources

from mlu_assets.cli import main
from mlu_assets.lumoe.sensors import unlearning_requests
from mlu_training.lumoe.requests import RequestRejected, check_request_id, write_request


@pytest.fixture
def world(tmp_path, tiny_world):
    """A requests folder and a data folder holding the entity catalog and the tiny profile's splits."""
    data, requests = tmp_path / "data", tmp_path / "requests"
    (data / "tables").mkdir(parents=True)
    requests.mkdir()
    tiny_world["catalog"].to_parquet(data / "tables" / "entity_catalog.parquet")
    tiny_world["splits"].to_parquet(data / "tables" / "benchmark_splits.parquet")
    return {"data": data, "requests": requests, "resources": test_resources(tmp_path), "tmp": tmp_path}


def tick(world, instance, cursor=None):
    return unlearning_requests(dg.build_sensor_context(instance=instance, cursor=cursor, resources=world["resources"]))


def added(result) -> list[str]:
    return [k for r in result.dynamic_partitions_requests for k in r.partition_keys]


def test_links_and_folders_are_refused_one_by_one_and_never_stop_the_valid_request(world):
    requests, outside = world["requests"], world["tmp"] / "secret.json"
    outside.write_text(json.dumps({"entities": ["Dog"]}))
    os.symlink(world["tmp"] / "nowhere.json", requests / "ghost.json")  # dangling
    os.symlink(outside, requests / "linked.json")  # a link to a file outside the folder
    (requests / "x.json").mkdir()  # a folder with a request's name
    write_request(requests, "good", ["Lisa Su"])
    with dg.instance_for_test() as instance:
        first = tick(world, instance)  # once, this raised on every tick
        assert added(first) == ["A", "B", "C", "D", "good"]
        reasons = {p.name: p.read_text() for p in requests.glob("*.rejected.txt")}
        assert set(reasons) == {"ghost.rejected.txt", "linked.rejected.txt", "x.rejected.txt"}
        assert "a symbolic link" in reasons["ghost.rejected.txt"] and "a symbolic link" in reasons["linked.rejected.txt"]
        assert "a folder" in reasons["x.rejected.txt"]
        assert not (world["data"] / "requests" / "linked.json").exists()  # the link was never read
        instance.add_dynamic_partitions("lumoe_requests", added(first))
        assert isinstance(tick(world, instance, first.cursor), dg.SkipReason)  # refused once, not every tick


def test_a_fixed_request_loses_its_stale_rejection(world):
    requests = world["requests"]
    write_request(requests, "later", ["Taylr Swfit"])
    with dg.instance_for_test() as instance:
        first = tick(world, instance)
        assert "unknown entity 'Taylr Swfit'" in (requests / "later.rejected.txt").read_text()
        write_request(requests, "later", ["Taylor Swift"])
        second = tick(world, instance, first.cursor)
        assert "later" in added(second)
        assert not (requests / "later.rejected.txt").exists()


def test_an_entity_another_expert_serves_is_refused(world, tiny_world):
    splits = tiny_world["splits"]
    served_by_a = splits[(splits["task"] == "A") & (splits["role"] == "forget")]["entity"].iloc[0]
    requests = world["requests"]
    write_request(requests, "again", [served_by_a])  # task A's expert forgets it already
    write_request(requests, "first", ["Big Ben"])
    write_request(requests, "second", ["big_ben"])  # the same entity, another spelling
    with dg.instance_for_test() as instance:
        result = tick(world, instance)
    assert added(result) == ["A", "B", "C", "D", "first"]
    assert "already forgotten by the expert of request 'A'" in (requests / "again.rejected.txt").read_text()
    assert "'Big_Ben' is already forgotten by the expert of request 'first'" in (requests / "second.rejected.txt").read_text()


def test_an_extra_pair_with_an_image_outside_the_release_is_refused_by_the_sensor(world):
    requests = world["requests"]
    (requests / "sneaky.json").write_text(json.dumps({"entities": ["Taylor Swift"], "qa": [
        {"question": "Where?", "answer": "Here.", "image": "downloaded_images//etc/passwd"}]}))
    with dg.instance_for_test() as instance:
        result = tick(world, instance)
    assert "sneaky" not in added(result)
    assert "qa[0].image must be a release image path" in (requests / "sneaky.rejected.txt").read_text()


@pytest.mark.parametrize("bad_id", ["../../escaped", "/tmp/abs-request", "sub/dir", "A", ".hidden", ""])
def test_request_ids_are_checked_in_one_place(bad_id):
    with pytest.raises(RequestRejected, match="a request id is"):
        check_request_id(bad_id)


@pytest.fixture
def cli_env(world, monkeypatch):
    monkeypatch.setenv("MLU_REQUESTS_DIR", str(world["requests"]))
    monkeypatch.setenv("MLU_DATA_DIR", str(world["data"]))
    return world


@pytest.mark.parametrize("bad_id", ["../../escaped", "/tmp/mlu-abs-request", "sub/dir"])
def test_mlu_request_never_writes_outside_the_folder(cli_env, bad_id, capsys):
    before = {p for p in cli_env["tmp"].rglob("*")}
    assert main(["request", bad_id, "Dog"]) == 2
    assert "rejected, nothing filed" in capsys.readouterr().err
    assert {p for p in cli_env["tmp"].rglob("*")} == before
    assert not os.path.exists("/tmp/mlu-abs-request.json")


def test_refiling_with_a_typo_keeps_the_valid_request(cli_env, capsys):
    requests = cli_env["requests"]
    assert main(["request", "mine", "Taylor Swift"]) == 0
    assert main(["request", "mine", "Taylor Swfit"]) == 2
    assert json.loads((requests / "mine.json").read_text()) == {"entities": ["Taylor Swift"]}
    (requests / "mine.rejected.txt").write_text("an old reason\n")
    assert main(["request", "mine", "Taylor Swift", "Lisa Su"]) == 0
    assert not (requests / "mine.rejected.txt").exists()
    assert "unknown entity 'Taylor Swfit'" in capsys.readouterr().err
