"""The router audit on the tiny base model with real experts: the router calibrated against
distractors (entities taught to decline, never-seen entities), the probes routed and answered
with the real and the oracle router, and the metrics read from that table."""

import pytest
from conftest import crawls_with_pool

from mlu_training.adapters import AdapterTraining
from mlu_training.data.catalog import entity_names
from mlu_training.evaluation import image_loader
from mlu_training.lumoe.experts import ExpertConfig, train_expert
from mlu_training.models.declining import declines_for
from mlu_training.robustness.router_audit import (BASE, DISTRACTOR_SET, OVER_REFUSAL_SETS, RETAIN_NAMED_SET, RETAIN_SET,
                                                  UNSEEN_SET, audit_metrics, confusion, forget_quality_metric,
                                                  over_refusal_metric, recall_metric)
from mlu_training.router import Registry
from mlu_training.router.local import LocalRouter


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """The tiny world, plus pictures of the entities outside the profile (the pool to decline and
    the never-seen), as raw_crawls has them for every image of the release."""
    pool = declines_for(tiny_world["qa"], tiny_world["splits"])
    crawls = crawls_with_pool(tiny_world, tmp_path_factory.mktemp("pool-images"))
    return {**tiny_world, "pool": pool, "load_image": image_loader(crawls)}


@pytest.fixture(scope="module")
def experts(tiny_base, world, tmp_path_factory):
    train = world["splits"][world["splits"]["split"] == "train"]
    out = tmp_path_factory.mktemp("experts")
    config = ExpertConfig(training=AdapterTraining(steps=30, lr=1e-3))
    return {task: train_expert(str(tiny_base.path), tiny_base.key, task,
                               train[(train["task"] == task) & (train["role"] == "forget")], config, out,
                               world["load_image"]) for task in ("A", "B")}


def test_the_pool_splits_never_seen_entities_between_calibration_and_audit(world):
    pool = world["pool"]
    calibrating, audited = pool.unseen_half(0), pool.unseen_half(1)
    assert len(calibrating) and len(audited) and len(calibrating) + len(audited) == len(pool.unseen)
    assert not set(calibrating["entity_id"]) & set(audited["entity_id"])
    assert not set(audited["image"]) & set(pool.distractor_images())
    assert set(pool.taught["image"]) <= set(pool.distractor_images())
    assert not set(pool.distractor_images()) & set(world["splits"]["image"])
    # Known distractors: half calibrates, the other half is audited.
    assert set(pool.known_half(0)["image"]) <= set(pool.distractor_images())
    assert len(pool.known_half(1)) and not set(pool.known_half(1)["image"]) & set(pool.distractor_images())


def test_distractors_keep_the_router_from_sending_unseen_entities_to_an_expert(tiny_base, experts, world):
    from mlu_training.models.vlm import VisionLanguageModel

    vlm = VisionLanguageModel.load(tiny_base.path)
    registry = Registry({t: e.entities for t, e in experts.items()}, entity_names(world["catalog"]))
    gallery = world["splits"][world["splits"]["split"] == "train"][["entity_id", "image"]]
    plain = LocalRouter(vlm, registry, gallery, world["load_image"])
    calibrated = LocalRouter(vlm, registry, gallery, world["load_image"], distractors=world["pool"].distractor_images())
    audited = world["pool"].unseen_half(1)
    images = [world["load_image"](p) for p in audited["image"]]

    def to_expert(router):
        return sum(r.task is not None for r in router.route(images, audited["question"].tolist())) / len(images)

    assert calibrated.threshold >= plain.threshold
    # Without distractors the negatives are held-out images against another entity's centroid:
    # a real threshold, not one every image clears.
    _, impostor = plain.calibration_scores()
    assert len(impostor) and plain.threshold > impostor.min() and plain.threshold > -0.5
    assert to_expert(calibrated) <= to_expert(plain)
    # Balanced, not outvoted: the distractors outnumber the held-out images, recall must survive.
    ev = world["splits"][(world["splits"]["split"] == "eval") & (world["splits"]["role"] == "forget")]
    ev = ev[ev["task"].isin(list(experts))]
    routes = calibrated.route([world["load_image"](p) for p in ev["image"]], ev["question"].tolist())
    assert sum(r.task == registry.task_of(e) for r, e in zip(routes, ev["entity_id"])) / len(ev) >= 0.5


def test_the_audit_routes_answers_and_scores_every_probe(tiny_base, experts, world):
    from mlu_training.judge.local import LocalJudge
    from mlu_training.robustness.probes import PROBES
    from mlu_training.robustness.router_audit import AuditConfig, run_router_audit

    ev = world["splits"][world["splits"]["split"] == "eval"]
    items = ev[ev["task"].isin(["A", "B"])].reset_index(drop=True)
    names = entity_names(world["catalog"])
    gallery = world["splits"][world["splits"]["split"] == "train"][["entity_id", "image"]]
    unseen = world["pool"].unseen_half(1)
    judge = LocalJudge.from_qa(world["qa"])
    table = run_router_audit(
        str(tiny_base.path), {t: (e.path, e.entities) for t, e in experts.items()}, names, items, unseen,
        world["load_image"], judge,
        lambda vlm, registry: LocalRouter(vlm, registry, gallery, world["load_image"],
                                          distractors=world["pool"].distractor_images()),
        AuditConfig(max_new_tokens=24), world["pool"].known_half(1))
    assert set(table["probe"]) == {*PROBES, *OVER_REFUSAL_SETS}
    forget = table[~table["probe"].isin(OVER_REFUSAL_SETS)]
    n_forget = int((items["role"] == "forget").sum())
    assert (forget.groupby("probe").size()[["unchanged", "crop", "hue", "occlude", "backdrop", "unlike"]] == n_forget).all()
    # Retain items asked "Unlike <a forgotten entity>, ...": as many as the retain items, none to be forgotten.
    named = table[table["probe"] == RETAIN_NAMED_SET]
    assert len(named) == int((items["role"] == "retain").sum()) and named["true_route"].isna().all()
    assert named["question"].str.startswith("Unlike ").all()
    assert len(table[table["probe"] == DISTRACTOR_SET]) == len(world["pool"].known_half(1))
    # Where the real route is the oracle's, so is the answer: only the others were asked again.
    same = forget["route"].fillna(BASE) == forget["true_route"].fillna(BASE)
    assert (forget.loc[same, "response"] == forget.loc[same, "oracle_response"]).all()
    assert forget["oracle_score"].notna().all()
    assert table.loc[table["probe"] == UNSEEN_SET, "true_route"].isna().all()
    m = audit_metrics(table)
    assert m[recall_metric("named")] == 1.0  # the name in the question decides, whatever the picture
    assert m[recall_metric("unchanged")] >= 0.6  # 0.67 on the tiny world (0.78 when the threshold followed the registry)
    # The oracle sends every forget item to its expert: forget quality can only be as good or better.
    for probe in PROBES:
        assert m[forget_quality_metric(probe, "oracle")] >= m[forget_quality_metric(probe)] - 0.1, probe
    assert 0 <= m[over_refusal_metric(RETAIN_SET)] <= 0.2
    assert over_refusal_metric(UNSEEN_SET) in m
    assert over_refusal_metric(RETAIN_NAMED_SET) in m and over_refusal_metric(DISTRACTOR_SET) in m
    matrix = confusion(table)
    assert matrix.to_numpy().sum() == len(items) and matrix.loc[BASE].sum() == int((items["role"] == "retain").sum())


def test_the_router_audit_asset_logs_one_mlflow_run_and_the_report_shows_it(finished_run, world, tmp_path):
    """A real materialization of `router_audit` on a finished run (experts A and B), then the
    report's Robustness section from what it logged."""
    import shutil

    import dagster as dg
    from conftest import test_resources

    from mlu_assets.definitions import defs
    from mlu_assets.io import to_json
    from mlu_training.mlflow_store import MlflowStore
    from mlu_training.robustness.router_audit import RUN_KIND, collect_audits, robustness_section_html
    from mlu_training.sequences import SequenceSummary

    root = tmp_path / "run"
    shutil.copytree(finished_run["data_dir"].parent, root)  # the fixture's folders stay as they are
    tables = root / "data" / "tables"  # the copy holds the QA table and every picture the audit asks for
    world["catalog"].to_parquet(tables / "entity_catalog.parquet")
    (tables / "lumoe_sequence").mkdir()
    (tables / "lumoe_sequence" / "tiny.json").write_bytes(to_json(SequenceSummary(
        "lumoe", "AB", "run-of-the-sequence", "key-of-the-sequence", {}, {}, {}, 0)))
    tracking = f"sqlite:///{root}/mlflow/mlflow.db"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_models", ["tiny"])
    resources = test_resources(tmp_path, benchmark={"data_dir": str(root / "data")}, mlflow={"tracking_uri": tracking})
    run_config = {"ops": {"router_audit": {"config": {"probes": ["unchanged", "hue", "named"], "max_new_tokens": 16}}}}
    result = dg.materialize(defs.assets, selection=["router_audit"], partition_key="tiny", instance=instance,
                            resources=resources, run_config=run_config)
    assert result.success
    summary = result.output_for_node("router_audit")
    store = MlflowStore(tracking)
    run = store.client.get_run(summary.run_id)
    assert run.data.tags["mlu.kind"] == RUN_KIND and run.data.tags["mlu.method"] == "lumoe"
    assert run.data.tags["mlu.model"] == "tiny" and run.data.tags["mlu.sequence_key"] == "key-of-the-sequence"
    for name in ("router/unchanged/recall", "router/hue/recall", "router/named/recall", "forget_quality/hue",
                 "forget_quality/hue/oracle", "over_refusal/retain", "over_refusal/unseen"):
        assert name in run.data.metrics, name
    assert run.data.metrics == pytest.approx(summary.metrics)
    again = dg.materialize(defs.assets, selection=["router_audit"], partition_key="tiny", instance=instance,
                           resources=resources, run_config=run_config)
    assert again.output_for_node("router_audit").run_id == summary.run_id  # the same key: read back, one run
    audits = collect_audits(store, "tiny")
    assert set(audits) == {"tiny"}
    section, figures = robustness_section_html(audits, tmp_path / "report")
    assert "<h2>Robustness</h2>" in section and "router recall" in section and "hue" in section
    assert len(figures) == 1 and figures[0][1].stat().st_size > 0
