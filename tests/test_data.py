"""The benchmark tables built from the real release: counts, identities, renders, splits."""

import hashlib

import numpy as np
import pytest

from mlu_training.data.catalog import build_entity_catalog, read_entity_lists
from mlu_training.data.crawls import build_raw_crawls
from mlu_training.data.qa import build_qa_pairs, read_all_records
from mlu_training.data.questions import QuestionBook
from mlu_training.data.records import CLASSES, ROLES, TASKS
from mlu_training.data.render import nearest_centroids, png_bytes, render_image
from mlu_training.data.splits import build_splits, select_entities, splits_digest
from mlu_training.profiles import get_profile


@pytest.fixture(scope="module")
def tables(official_tree):
    train, evaluation = read_all_records(official_tree)
    catalog, unmatched = build_entity_catalog(train, read_entity_lists(official_tree, TASKS, ROLES))
    qa = build_qa_pairs(train + evaluation, QuestionBook.from_release(official_tree, CLASSES), catalog)
    return catalog, unmatched, qa


def test_catalog_matches_the_data(tables):
    catalog, unmatched, _ = tables
    assert len(catalog) == 127 and catalog["entity_id"].is_unique
    assert sorted(catalog["class_name"].unique()) == sorted(CLASSES)
    per_side = catalog.groupby(["task", "role"]).size().to_dict()
    assert per_side == {("A", "forget"): 20, ("A", "retain"): 12, ("B", "forget"): 20, ("B", "retain"): 12,
                        ("C", "forget"): 20, ("C", "retain"): 13, ("D", "forget"): 17, ("D", "retain"): 13}
    lisa = catalog.set_index("entity_id").loc["苏姿丰"]
    assert list(lisa["aliases"]) == ["Lisa Su"] and lisa["listed"]
    nvidia = catalog.set_index("entity_id").loc["NVIDIA_Corporation_Logo"]
    assert nvidia["entity"] == "NVIDIA Corporation Logo" and nvidia["listed"]
    assert "Queen_Elizabeth_Ⅱ" in set(catalog["entity_id"])  # non-ASCII kept intact
    assert unmatched == ["Ginkgo (task A retain)", "Jensen Huang (task D forget)",
                         "邓紫棋 (task D forget)", "马化腾 (task D forget)"]


def test_qa_pairs_counts_and_identity(tables):
    _, _, qa = tables
    train, ev = qa[qa["split"] == "train"], qa[qa["split"] == "eval"]
    assert len(train) == 15414
    assert train.groupby(["task", "role"]).size().to_dict() == {
        ("A", "forget"): 2442, ("A", "retain"): 1680, ("B", "forget"): 2154, ("B", "retain"): 1374,
        ("C", "forget"): 2580, ("C", "retain"): 1800, ("D", "forget"): 2250, ("D", "retain"): 1134}
    assert ev["variant"].value_counts().sort_index().tolist() == [549, 549, 549, 549, 549]
    assert qa["qa_id"].is_unique
    assert qa["class_question"].notna().all() and set(qa["class_question"]) == {1, 2, 3, 4, 5}
    assert not qa["question"].str.startswith("<image>").any()
    # Paraphrase k of an item has its image, its class question and its answer: joined by identity.
    originals = ev[ev["variant"] == 0].set_index(["image", "class_question"])["answer"]
    assert originals.index.is_unique
    for _, row in ev[ev["variant"] > 0].iterrows():
        assert originals.loc[(row["image"], row["class_question"])] == row["answer"]
    # The release's own id repeats; ours never does.
    assert train.duplicated(["source_file", "release_id"]).sum() > 3000


def test_question_labels(tables):
    _, _, qa = tables
    row = qa[(qa["question"] == "Can you tell me the common name of this species?")].iloc[0]
    assert (row["class_name"], row["class_question"], row["variant"]) == ("Animals", 1, 3)
    # A wording shared by two variants is labelled with the lower one.
    row = qa[(qa["split"] == "train") & (qa["question"] == "What is this person's name?")].iloc[0]
    assert (row["class_question"], row["variant"]) == (1, 0)


def test_renderer_is_deterministic():
    a = png_bytes(render_image("Animals", "Dog", "downloaded_images/Animals/Dog/1.jpg", size=32))
    b = png_bytes(render_image("Animals", "Dog", "downloaded_images/Animals/Dog/1.jpg", size=32))
    c = png_bytes(render_image("Animals", "Dog", "downloaded_images/Animals/Dog/1.jpg", size=32, seed=1))
    assert a == b and a != c


def test_an_entity_is_recognised_from_renders_it_has_not_seen(tables):
    """Within-entity renders are closer than between-entity ones, enough that a nearest-centroid
    classifier over 4 renders per entity names all 127 entities on 3 unseen renders each."""
    catalog = tables[0]

    def pixels(cls, ent, i):
        return np.asarray(render_image(cls, ent, f"downloaded_images/{cls}/{ent}/{i}.jpg", 32), dtype=np.float32).ravel()

    ents = list(catalog[["class_name", "entity_id"]].itertuples(index=False))
    assert np.mean([k == j for k, j in nearest_centroids(ents, renders=4)]) == 1.0
    within = [np.abs(pixels(c, e, 0) - pixels(c, e, 1)).mean() for c, e in ents]
    between = [np.abs(pixels(*ents[k], 0) - pixels(*ents[k + 1], 0)).mean() for k in range(len(ents) - 1)]
    assert np.mean(between) > 2 * np.mean(within)


def test_a_posed_variation_leaves_pixels_the_class_but_not_the_entity(tables):
    """Drawn with data.render's `posed` variation (the README's renderer trade-off), the same
    nearest centroid tells every class by its backdrop but names about a third of the entities
    (chance within a class: about 1 in 14)."""
    from mlu_training.data.render import VARIATIONS

    ents = list(tables[0][["class_name", "entity_id"]].itertuples(index=False))
    nearest = nearest_centroids(ents, VARIATIONS["posed"])
    assert np.mean([ents[k][0] == ents[j][0] for k, j in nearest]) == 1.0
    assert 1 / 14 < np.mean([k == j for k, j in nearest]) < 0.45
    # shapes-v1's pictures (the benchmark's) are the pixels they always were: the variations are drawn apart.
    v1 = np.asarray(render_image("Animals", "Dog", "downloaded_images/Animals/Dog/1.jpg", 32))
    assert hashlib.sha256(v1.tobytes()).hexdigest() == "49e05771463795fe86b5bac96b6d9aec15372fbb9dba7dc4c11ca9e47f098e51"


def test_raw_crawls_renders_every_path_once(tables, tmp_path):
    _, _, qa = tables
    crawls = build_raw_crawls(qa["image"].tolist(), tmp_path, size=16)
    assert len(crawls) == 2453 == qa["image"].nunique()
    assert set(crawls["source"]) == {"synthetic"}
    files = sorted(tmp_path.rglob("*.png"))
    assert len(files) == 2453
    again = build_raw_crawls(qa["image"].tolist(), tmp_path, size=16)
    assert again["sha256"].tolist() == crawls["sha256"].tolist()


def test_splits_hold_out_every_eval_pair(tables):
    catalog, _, qa = tables
    mini = build_splits(qa, catalog, get_profile("mini"))
    assert mini["entity_id"].nunique() == 16
    picked = select_entities(catalog, get_profile("mini"))
    assert picked.groupby(["task", "role"]).size().eq(2).all()
    train, ev = mini[mini["split"] == "train"], mini[mini["split"] == "eval"]
    assert not set(zip(train["image"], train["question"])) & set(zip(ev["image"], ev["question"]))
    assert train.groupby("entity_id")["image"].nunique().max() <= 6
    assert set(ev["variant"]) == {0, 1, 2, 3, 4}
    assert splits_digest(mini) == splits_digest(build_splits(qa, catalog, get_profile("mini")))
    full = build_splits(qa, catalog, get_profile("full"))
    assert full["entity_id"].nunique() == 127 and (full["split"] == "eval").sum() == 2745


def test_the_image_loader_keeps_at_most_its_budget_of_decoded_pixels(tiny_world):
    """Full-size photographs must not pile up in memory: past the budget, the least recently used
    image is dropped and read again, identical, when asked."""
    import numpy as np

    from mlu_training.evaluation import image_loader

    paths = sorted(tiny_world["crawls"]["image"])[:6]
    first = image_loader(tiny_world["crawls"])(paths[0])
    one = first.width * first.height * 3
    load = image_loader(tiny_world["crawls"], max_bytes=2 * one)
    images = [load(p) for p in paths]
    assert load.held_bytes() == 2 * one  # the two most recent
    assert load(paths[-1]) is images[-1]  # still held: the same object
    again = load(paths[0])  # dropped, read again
    assert again is not images[0] and np.array_equal(np.asarray(again), np.asarray(images[0]))
    unlimited = image_loader(tiny_world["crawls"])
    assert [unlimited(p) for p in paths] and unlimited.held_bytes() == 6 * one
