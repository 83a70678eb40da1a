"""LUMoE: an expert per request on the unchanged base model, served beside the others without
copies, routed by the local router; requests from files through the sensor; the registry."""

import json

import dagster as dg
import mlflow
import pandas as pd
import pytest
from conftest import test_resources

from mlu_training.judge.local import is_refusal
from mlu_training.adapters import AdapterTraining
from mlu_training.lumoe.experts import ExpertConfig, train_expert
from mlu_training.lumoe.mixture import ExpertMixture
from mlu_training.lumoe.requests import RequestRejected, UnlearningRequest, read_request, request_rows, write_request
from mlu_training.profiles import get_profile
from mlu_training.router import Registry, router_quality
from mlu_training.router.local import LocalRouter
from mlu_training.router.oracle import OracleRouter


EXPERT_30_STEPS = ExpertConfig(training=AdapterTraining(steps=30, lr=1e-3))  # an expert's rate, its default steps


@pytest.fixture(scope="module")
def experts(tiny_base, tiny_world, tmp_path_factory):
    train = tiny_world["splits"][tiny_world["splits"]["split"] == "train"]
    out = tmp_path_factory.mktemp("experts")
    return {task: train_expert(str(tiny_base.path), tiny_base.key, task,
                               train[(train["task"] == task) & (train["role"] == "forget")],
                               EXPERT_30_STEPS, out, tiny_world["load_image"]) for task in ("A", "B")}


@pytest.fixture(scope="module")
def items(tiny_world):
    ev = tiny_world["splits"][tiny_world["splits"]["split"] == "eval"]
    return ev[ev["task"].isin(["A", "B"])].reset_index(drop=True)


def test_an_expert_refuses_its_forget_questions_and_the_base_model_does_not(tiny_base, experts, items, tiny_world):
    mixture = ExpertMixture(str(tiny_base.path))
    mixture.add_expert("A", experts["A"].path)
    forget_a = items[(items["task"] == "A") & (items["role"] == "forget")]
    images = [tiny_world["load_image"](p) for p in forget_a["image"]]
    with_expert = mixture.generate(images, forget_a["question"].tolist(), ["A"] * len(forget_a))
    without = mixture.generate(images, forget_a["question"].tolist(), [None] * len(forget_a))
    assert sum(map(is_refusal, with_expert)) / len(with_expert) >= 0.8
    assert not any(map(is_refusal, without))
    assert experts["A"].entities == sorted(forget_a["entity_id"].unique())
    again = train_expert(str(tiny_base.path), tiny_base.key, "A", tiny_world["splits"].pipe(
        lambda s: s[(s["split"] == "train") & (s["task"] == "A") & (s["role"] == "forget")]), EXPERT_30_STEPS,
        experts["A"].path.parent, tiny_world["load_image"])
    assert again.reused and again.path == experts["A"].path


def test_grouped_and_mixed_batches_match_each_sample_alone_without_copies(tiny_base, experts, items, tiny_world):
    mixture = ExpertMixture(str(tiny_base.path))
    base_params = sum(p.numel() for p in mixture.vlm.model.parameters())
    for task, expert in experts.items():
        mixture.add_expert(task, expert.path)
    adapter_params = sum(p.numel() for n, p in mixture.vlm.model.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in mixture.vlm.model.parameters()) == base_params + adapter_params  # one base model
    sample = items.groupby(["task", "role"]).head(4)
    routes = [t if r == "forget" else None for t, r in zip(sample["task"], sample["role"])]
    images = [tiny_world["load_image"](p) for p in sample["image"]]
    questions = sample["question"].tolist()
    grouped = mixture.generate(images, questions, routes, mode="grouped", max_new_tokens=24)
    mixed = mixture.generate(images, questions, routes, mode="mixed", max_new_tokens=24)
    alone = [mixture.generate([im], [q], [r], max_new_tokens=24)[0] for im, q, r in zip(images, questions, routes)]
    assert grouped == mixed == alone
    # Rows refilled as others end (4 at a time), each with its own adapter.
    assert mixture.generate(images, questions, routes, mode="mixed", batch_size=4, max_new_tokens=24) == alone
    assert len(set(grouped)) > 2
    with pytest.raises(KeyError, match="no expert loaded"):
        mixture.generate(images[:1], questions[:1], ["Z"])


def _oracle_sequence(base_path, adapters, items, tiny_world, answers):
    from mlu_training.judge.local import LocalJudge
    from mlu_training.lumoe.sequence import LumoeConfig, run_lumoe_sequence

    forget = items[items["role"] == "forget"]
    experts = {t: (str(path), sorted(forget.loc[forget["task"] == t, "entity_id"].unique())) for t, path in adapters.items()}
    result, _ = run_lumoe_sequence(str(base_path), experts, {}, items, tiny_world["load_image"], LocalJudge(),
                                   lambda vlm, registry: OracleRouter(registry),
                                   LumoeConfig(tasks=tuple(adapters), router="oracle", max_new_tokens=24), answers=answers)
    return result.evaluations


def test_answers_are_generated_once_per_model_state_route_and_item(tiny_base, experts, items, tiny_world):
    from mlu_training.lumoe.answers import AnswerCache

    sample = items.groupby(["task", "role"]).head(6).reset_index(drop=True)
    adapters = {t: e.path for t, e in experts.items()}
    uncached, cached = AnswerCache(enabled=False), AnswerCache()
    without = _oracle_sequence(tiny_base.path, adapters, sample, tiny_world, uncached)
    with_cache = _oracle_sequence(tiny_base.path, adapters, sample, tiny_world, cached)
    pd.testing.assert_frame_equal(with_cache, without)  # the same answers, scores and routes
    assert len(set(without["response"])) > 2
    n, forget_b = len(sample), int(((sample["task"] == "B") & (sample["role"] == "forget")).sum())
    assert uncached.generated == 2 * n  # every item at each of the two steps
    # Step A: all n. Step B: only B's forget items, now routed to B's expert instead of the base model.
    assert (cached.generated, cached.reused) == (n + forget_b, n - forget_b)

    # Another adapter under the same route (an expert retrained) answers afresh, never from the cache.
    swapped = {"A": experts["B"].path, "B": experts["A"].path}
    again = _oracle_sequence(tiny_base.path, swapped, sample, tiny_world, cached)
    pd.testing.assert_frame_equal(again, _oracle_sequence(tiny_base.path, swapped, sample, tiny_world, AnswerCache(False)))
    forget = int((sample["role"] == "forget").sum())
    # Reused: the retain items (the same base model, the same items, at both steps) and B's forget
    # items at step A (the base model); decoded: A's forget items at both steps (swapped adapter A,
    # then the cache), B's forget items at step B.
    assert cached.generated - (n + forget_b) == forget


def test_another_base_model_never_reuses_an_answer(tiny_base, tmp_path, items, tiny_world):
    import shutil

    from mlu_training.lumoe.answers import AnswerCache

    other = tmp_path / "other-base"
    shutil.copytree(tiny_base.path, other)
    (other / "generation_config.json").write_text((other / "generation_config.json").read_text() + "\n")
    sample = items.head(4)
    images, questions = [tiny_world["load_image"](p) for p in sample["image"]], sample["question"].tolist()
    inputs, cache = list(zip(sample["image"], questions)), AnswerCache()
    for path in (tiny_base.path, other, tiny_base.path):
        cache.generate(ExpertMixture(str(path)), images, questions, [None] * 4, inputs, max_new_tokens=8)
    assert (cache.generated, cache.reused) == (8, 4)  # a byte changed is another model; the first one again is not
    cache.generate(ExpertMixture(str(other)), images, questions, [None] * 4, inputs, max_new_tokens=9)
    assert cache.generated == 12  # other decoding settings: decoded again


def test_local_router_sends_forgotten_entities_to_their_expert_and_the_rest_to_the_base(tiny_base, experts, items, tiny_world):
    from mlu_training.models.vlm import VisionLanguageModel

    vlm = VisionLanguageModel.load(tiny_base.path)
    catalog = tiny_world["catalog"]
    names = {r.entity_id: [r.entity, *list(r.aliases)] for r in catalog.itertuples()}
    registry = Registry({t: e.entities for t, e in experts.items()}, names)
    train = tiny_world["splits"][tiny_world["splits"]["split"] == "train"]
    router = LocalRouter(vlm, registry, train[["entity_id", "image"]], tiny_world["load_image"])
    images = [tiny_world["load_image"](p) for p in items["image"]]
    routes = router.route(images, items["question"].tolist())
    truth = [registry.task_of(e) for e in items["entity_id"]]
    per_task, summary = router_quality(routes, truth, items["role"].tolist())
    assert summary["forget_recall"] >= 0.8 and summary["retain_to_expert_rate"] <= 0.1
    assert set(per_task["task"]) == {"A", "B"} and (per_task["precision"] >= 0.8).all()
    # A name in the question decides, whatever the picture: a forgotten one routes, a kept one does not.
    forgotten, kept = experts["A"].entities[0], items.loc[items["role"] == "retain", "entity_id"].iloc[0]
    black = images[0].copy()
    by_name = router.route([black, black], [f"Where was {names[forgotten][0]} born?", f"What is {names[kept][0]} known for?"])
    assert [r.task for r in by_name] == ["A", None] and by_name[0].reason == "named in the question"
    oracle = OracleRouter(registry).route(images, items["question"].tolist(), items["entity_id"].tolist())
    assert [r.task for r in oracle] == truth
    # Lifelong: a later request never moves an earlier request's images. With only task A
    # forgotten, then A and B, A's images go where they went and the threshold stays.
    only_a = Registry({"A": experts["A"].entities}, names)
    router.refresh(only_a)
    threshold, before = router.threshold, router.route(images, items["question"].tolist())
    router.refresh(registry)
    after = router.route(images, items["question"].tolist())
    assert router.threshold == threshold
    of_a = [i for i, t in enumerate(truth) if t == "A"]
    assert of_a and [before[i].task for i in of_a] == [after[i].task for i in of_a]
    assert [(before[i].entity, before[i].score) for i in of_a] == [(after[i].entity, after[i].score) for i in of_a]


def test_requests_are_checked_against_the_catalog(tmp_path, tiny_world):
    catalog = tiny_world["catalog"]
    ok = read_request(write_request(tmp_path, "req-1", ["Lisa Su", "big ben"]), catalog)
    assert ok.id == "req-1" and ok.entity_ids == ["Big_Ben", "苏姿丰"]  # an alias and a spelling both resolve
    with pytest.raises(RequestRejected, match="unknown entity 'Unicorn'"):
        read_request(write_request(tmp_path, "req-2", ["Unicorn", "Dog"]), catalog)
    (tmp_path / "req-3.json").write_text('{"entities": []}')
    with pytest.raises(RequestRejected, match="non-empty list"):
        read_request(tmp_path / "req-3.json", catalog)
    with pytest.raises(RequestRejected, match="file name"):
        read_request(write_request(tmp_path, "A", ["Dog"]), catalog)
    qa = tiny_world["splits"].assign(split="train")
    rows = request_rows(read_request(write_request(tmp_path, "req-4", [qa["entity"].iloc[0]]), catalog), qa, 2)
    assert set(rows["task"]) == {"req-4"} and set(rows["role"]) == {"forget"} and rows["image"].nunique() <= 2
    # Extra pairs to forget travel with the request, checked field by field.
    image = qa["image"].iloc[0]
    (tmp_path / "req-5.json").write_text(json.dumps({"entities": ["Dog"], "qa": [
        {"question": "Who walks it?", "answer": "Its owner, every morning.", "image": image}]}))
    extra = read_request(tmp_path / "req-5.json", catalog)
    rows = request_rows(extra, qa, 2, known_images=set(qa["image"]))
    assert "Its owner, every morning." in set(rows["answer"]) and set(rows["role"]) == {"forget"}
    with pytest.raises(RequestRejected, match="no image for"):
        request_rows(extra, qa, 2, known_images=set())
    (tmp_path / "req-6.json").write_text(json.dumps({"entities": ["Dog"], "qa": [{"question": "Q?", "answer": ""}]}))
    with pytest.raises(RequestRejected, match=r"qa\[0\]\.answer must be non-empty"):
        read_request(tmp_path / "req-6.json", catalog)


def test_a_request_takes_the_same_pictures_of_an_entity_as_the_profile(tiny_world):
    """One capping rule: a request for a benchmark entity trains on the images the profile's
    splits chose for it (once, they were picked by two different rules)."""
    qa, splits = tiny_world["qa"], tiny_world["splits"]
    train = splits[splits["split"] == "train"]
    for entity in sorted(train["entity_id"].unique()):
        request = UnlearningRequest("req", [entity])
        rows = request_rows(request, qa, get_profile("tiny").max_train_images_per_entity)
        assert set(rows["image"]) == set(train.loc[train["entity_id"] == entity, "image"]), entity


def test_the_request_sensor_keeps_a_cursor_and_rejects_with_a_reason(tmp_path, tiny_world):
    from mlu_assets.lumoe.sensors import unlearning_requests

    data, requests = tmp_path / "data", tmp_path / "requests"
    (data / "tables").mkdir(parents=True)
    tiny_world["catalog"].to_parquet(data / "tables" / "entity_catalog.parquet")
    write_request(requests, "forget-lisa", ["Lisa Su"])
    write_request(requests, "typo", ["Taylr Swfit"])
    resources = test_resources(tmp_path)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_models", ["tiny", "other"])
        first = unlearning_requests(dg.build_sensor_context(instance=instance, resources=resources))
        assert not first.run_requests  # a new request: its partition, which the automation trains
        [add] = first.dynamic_partitions_requests
        assert add.partition_keys == ["A", "B", "C", "D", "forget-lisa"]
        assert "unknown entity 'Taylr Swfit'" in (requests / "typo.rejected.txt").read_text()
        assert json.loads((data / "requests" / "forget-lisa.json").read_text())["entity_ids"] == ["苏姿丰"]
        instance.add_dynamic_partitions("lumoe_requests", add.partition_keys)
        second = unlearning_requests(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources))
        assert isinstance(second, dg.SkipReason)  # nothing new: nothing started twice
        write_request(requests, "forget-lisa", ["Lisa Su", "Big Ben"])  # the request changed: train again
        third = unlearning_requests(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources))
        assert sorted(r.partition_key for r in third.run_requests) == ["other|forget-lisa", "tiny|forget-lisa"]
        assert json.loads((data / "requests" / "forget-lisa.json").read_text())["entity_ids"] == ["Big_Ben", "苏姿丰"]
        assert not third.dynamic_partitions_requests  # the partition exists already
        fourth = unlearning_requests(dg.build_sensor_context(instance=instance, cursor=third.cursor, resources=resources))
        assert isinstance(fourth, dg.SkipReason)
        fifth = unlearning_requests(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources))
        assert {r.run_key for r in fifth.run_requests} == {r.run_key for r in third.run_requests}  # keys repeat nothing


def test_a_new_expert_makes_lumoe_sequence_run_again():
    from mlu_assets.definitions import defs

    sequence = dg.AssetKey("lumoe_sequence")
    expert_a = dg.MultiPartitionKey({"model": "tiny", "request": "A"})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("lumoe_requests", ["A"])
        instance.add_dynamic_partitions("base_models", ["tiny"])
        for parent in ("benchmark_splits", "raw_crawls", "entity_catalog", "validated_qa_pairs"):
            instance.report_runless_asset_event(dg.AssetMaterialization(parent))
        for parent in ("base_model", "knowledge_filter"):
            instance.report_runless_asset_event(dg.AssetMaterialization(parent, partition="tiny"))
        instance.report_runless_asset_event(dg.AssetMaterialization("lumoe_experts", partition=expert_a))
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        instance.report_runless_asset_event(dg.AssetMaterialization("lumoe_sequence", partition="tiny"))
        quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert quiet.get_num_requested(sequence) == 0  # up to date: nothing to do
        instance.report_runless_asset_event(dg.AssetMaterialization("lumoe_experts", partition=expert_a))
        later = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert later.get_requested_partitions(sequence) == {"tiny"}  # a new expert: re-evaluate


def test_openai_router_two_steps_through_a_real_local_server(tmp_path, tiny_world):
    from mlu_training.router.openai_router import OpenAIRouter
    from mlu_training.serving.local_openai import Fault, LocalChatServer, last_user_text

    catalog = tiny_world["catalog"]
    classes = dict(zip(catalog["entity_id"], catalog["class_name"]))
    names = {r.entity_id: [r.entity, *list(r.aliases)] for r in catalog.itertuples()}
    registry = Registry({"A": ["Dolphin"]}, names)
    seen_images = []

    def vision_model(body):  # answers like a model that recognises a dolphin in any picture
        parts = body["messages"][-1]["content"]
        seen_images.append(next(p["image_url"]["url"] for p in parts if p["type"] == "image_url"))
        text = last_user_text(body)
        if "Which one of these categories" in text:
            return "Animals." if "swim" in text else "None"
        return "dolphin" if "Dolphin" in text else "None"

    image = tiny_world["load_image"](tiny_world["splits"]["image"].iloc[0])
    with LocalChatServer(vision_model) as server:
        server.inject(Fault(status=429, retry_after=0.1), Fault(status=503))
        router = OpenAIRouter(registry, classes, "vision", base_url=server.base_url,
                              cache_url=f"sqlite:///{tmp_path}/c.db", concurrency=1, backoff_s=0.01)
        routes = router.route([image, image], ["How fast does it swim?", "What is this?"])
        assert [r.task for r in routes] == ["A", None] and routes[0].entity == "Dolphin"
        assert routes[1].reason == "class: None"
        assert seen_images[0].startswith("data:image/png;base64,")
        n = server.requests
        assert [r.task for r in router.route([image], ["How fast does it swim?"])] == ["A"]
        assert server.requests == n  # cached: no call
        server.inject(*[Fault(status=500)] * 6)
        down = OpenAIRouter(registry, classes, "vision", base_url=server.base_url, concurrency=1, backoff_s=0.01,
                            max_retries=2)
        [missing] = down.route([image], ["Where does it swim?"])
        assert missing.task is None and missing.reason.startswith("missing:") and down.missing == 1
