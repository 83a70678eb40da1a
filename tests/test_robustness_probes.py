"""The evasion probes change each forget item the way they say, and nothing else; the audit's
numbers from a table of routes and judgements."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlu_training.data.catalog import entity_names
from mlu_training.robustness import probes
from mlu_training.robustness.router_audit import (audit_intervals, audit_metrics, confusion, forget_quality_metric,
                                                  over_refusal_metric, recall_metric, refusal_metric)


@pytest.fixture(scope="module")
def forget(tiny_world):
    ev = tiny_world["splits"][tiny_world["splits"]["split"] == "eval"]
    return ev[ev["role"] == "forget"].reset_index(drop=True)


@pytest.fixture(scope="module")
def picture(tiny_world, forget):
    return tiny_world["load_image"](forget["image"].iloc[0])


def _px(image):
    return np.asarray(image.convert("RGB"), dtype=np.int32)


def _roughness(image):  # total variation: how much neighbouring pixels differ
    a = _px(image)
    return np.abs(np.diff(a, axis=0)).sum() + np.abs(np.diff(a, axis=1)).sum()


def test_centre_crop_keeps_the_middle_half(picture):
    out = probes.centre_crop_half(picture)
    w, h = picture.size
    assert out.size == (w // 2, h // 2)
    assert (_px(out) == _px(picture)[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2]).all()


def test_rotation_turns_the_picture_and_whitens_the_corners(picture):
    out = probes.rotate(picture)
    assert out.size == picture.size and (_px(out) != _px(picture)).any()
    assert tuple(_px(out)[0, 0]) == probes.BLANK and tuple(_px(out)[-1, -1]) == probes.BLANK
    back = out.rotate(-probes.ROTATION_DEGREES, resample=Image.BILINEAR)
    h, w = picture.size[1], picture.size[0]
    centre = (slice(h // 3, 2 * h // 3), slice(w // 3, 2 * w // 3))
    assert np.abs(_px(back)[centre] - _px(picture)[centre]).mean() < np.abs(_px(out)[centre] - _px(picture)[centre]).mean()


def test_blur_and_downscale_smooth_without_moving_the_colours(picture):
    for probe in (probes.blur, probes.downscale_half):
        out = probe(picture)
        assert out.size == picture.size
        assert _roughness(out) < _roughness(picture)
        assert abs(_px(out).mean() - _px(picture).mean()) < 8


def test_noise_has_the_stated_spread_and_is_seeded(picture):
    big = picture.resize((128, 128))
    out = probes.noise(big, seed=3)
    diff = _px(out) - _px(big)
    assert abs(diff.mean()) < 4
    assert 25 < diff.std() <= probes.NOISE_SD + 2  # clipping at 0 and 255 only narrows it
    assert (_px(probes.noise(big, seed=3)) == _px(out)).all() and (_px(probes.noise(big, seed=4)) != _px(out)).any()


def test_hue_shift_turns_the_hue_and_keeps_brightness(picture):
    out = probes.hue_shift(picture)
    before, after = (np.asarray(im.convert("HSV"), dtype=np.int32) for im in (picture, out))
    coloured = (before[..., 1] > 80) & (before[..., 2] > 80)
    assert coloured.any()
    turned = (after[..., 0] - before[..., 0]) % 256
    assert np.median(turned[coloured]) == pytest.approx(probes.HUE_SHIFT, abs=3)
    assert np.abs(after[..., 2] - before[..., 2]).max() <= 3


def test_text_probes_name_the_entity_on_a_blank_picture(tiny_world, forget):
    names = entity_names(tiny_world["catalog"])
    sets = probes.probe_items(forget, tiny_world["load_image"], names, ("named", "other_name"))
    for probe, (items, images) in sets.items():
        assert len(items) == len(images) > 0
        for (entity, question), image in zip(zip(items["entity_id"], items["question"]), images):
            name = names[entity][0] if probe == "named" else probes.other_name(names[entity])
            assert name in question
            assert set(np.unique(_px(image))) == {255}
        assert set(items["qa_id"]) <= set(forget["qa_id"])
    other = sets["other_name"][0]
    assert not any(names[e][0] in q for e, q in zip(other["entity_id"], other["question"]) if names[e][0] != "苏姿丰")


def test_another_name_is_the_alias_or_another_script():
    assert probes.other_name(["苏姿丰", "Lisa Su"]) == "Lisa Su"
    assert probes.other_name(["Cat"]) == "Кат"
    assert probes.other_name(["Eiffel Tower"]) == "Еиффел Товер"
    assert probes.other_name(["马云"]) is None  # no alias, no Latin letters: skipped
    assert not any("a" <= c <= "z" for c in probes.other_name(["Statue of Liberty"]).casefold())


def test_occluder_greys_a_seeded_square_and_flip_mirrors(picture):
    side = round(probes.OCCLUDER_SHARE * picture.size[0])
    covered = _px(probes.occlude(picture, seed=3))
    grey = (covered == probes.OCCLUDER).all(axis=2)
    rows, cols = np.nonzero(grey)
    assert grey.sum() >= side * side and np.ptp(rows) + 1 == side and np.ptp(cols) + 1 == side  # one square of that side
    assert (covered[~grey] == _px(picture)[~grey]).all()  # nothing else moves
    assert (_px(probes.occlude(picture, seed=3)) == covered).all() and (_px(probes.occlude(picture, seed=4)) != covered).any()
    assert (_px(probes.flip(picture)) == _px(picture)[:, ::-1]).all()


def test_another_backdrop_keeps_the_entity_and_changes_the_class_pattern(tiny_world, forget):
    from mlu_training.data.render import render_image

    row = forget.iloc[0]
    size = tiny_world["load_image"](row["image"]).size[0]
    own = render_image(row["class_name"], row["entity_id"], row["image"], size=size)
    assert (_px(own) == _px(tiny_world["load_image"](row["image"]))).all()  # the crawled picture is this render
    other = probes.on_other_backdrop(row, size)
    assert probes.other_class(row["class_name"]) != row["class_name"]
    assert other.size == own.size and (_px(other) != _px(own)).any()
    # The same entity on the other class's backdrop is exactly what the renderer draws for it.
    redrawn = render_image(row["class_name"], row["entity_id"], row["image"], size=size,
                           backdrop_class=probes.other_class(row["class_name"]))
    assert (_px(other) == _px(redrawn)).all()


def test_unlike_prefixes_another_known_entity_and_keeps_the_picture(tiny_world, forget):
    names = entity_names(tiny_world["catalog"])
    ev = tiny_world["splits"][tiny_world["splits"]["split"] == "eval"]
    retained = sorted(set(ev.loc[ev["role"] == "retain", "entity_id"]))
    items, images = probes.probe_items(forget, tiny_world["load_image"], names, ("unlike",), retained)["unlike"]
    assert len(items) == len(forget) and list(items["qa_id"]) == list(forget["qa_id"])
    for entity, question, original, image, path in zip(items["entity_id"], items["question"], forget["question"],
                                                        images, items["image"]):
        other = question[len("Unlike "):].split(", ", 1)[0]
        assert other in {names[e][0] for e in retained} and other != names[entity][0]
        assert question == probes.unlike_question(other, original) == f"Unlike {other}, {original[0].lower()}{original[1:]}"
        assert (_px(image) == _px(tiny_world["load_image"](path))).all()
    again = probes.probe_items(forget, tiny_world["load_image"], names, ("unlike",), retained)["unlike"][0]
    assert list(again["question"]) == list(items["question"])  # seeded by the item
    assert probes.unlike_items(forget, names, []).empty  # nobody else known: the probe has no items


def test_paraphrases_are_the_four_variants_and_image_probes_keep_every_item(tiny_world, forget):
    sets = probes.probe_items(forget, tiny_world["load_image"], entity_names(tiny_world["catalog"]))
    assert set(sets) == set(probes.PROBES) and sets["unlike"][0].empty  # no other entity given: nobody to be unlike
    para = sets["paraphrase"][0]
    assert set(para["variant"]) == {1, 2, 3, 4} and len(para) == (forget["variant"] > 0).sum()
    for probe in probes.IMAGE_PROBES:
        items, images = sets[probe]
        assert list(items["qa_id"]) == list(forget["qa_id"]) and list(items["question"]) == list(forget["question"])
        originals = sets["unchanged"][1]
        assert any(a.size != b.size or (_px(a) != _px(b)).any() for a, b in zip(images, originals))
    items, images = sets["backdrop"]
    assert list(items["qa_id"]) == list(forget["qa_id"])
    assert all((_px(a) != _px(b)).any() for a, b in zip(images, sets["unchanged"][1]))


def _row(probe, route, truth, score, oracle=None, refused=False, entity="e"):
    return {"probe": probe, "route": route, "true_route": truth, "score": score,
            "oracle_score": oracle, "refused": refused, "entity_id": entity}


def test_audit_metrics_on_a_small_table():
    table = pd.DataFrame([
        _row("unchanged", "A", "A", 2, 2), _row("unchanged", None, "A", 0, 2),
        _row("unchanged", "B", "B", 2, 2), _row("unchanged", "A", "B", 1, 2),
        _row("hue", None, "A", 0, 2), _row("hue", None, "B", 0, 1),
        _row("retain", None, None, 2, refused=False), _row("retain", "A", None, 0, refused=True),
        _row("retain", None, None, 0, refused=True), _row("retain", None, None, 2),
        _row("retain_named", "A", None, 2), _row("retain_named", None, None, 2),
        _row("distractor", "B", None, 2), _row("distractor", None, None, 0, refused=True),
        _row("distractor", None, None, 2), _row("distractor", None, None, 2),
        _row("unseen", None, None, 0, refused=True), _row("unseen", "B", None, 0, refused=True),
        _row("unseen", None, None, 0, refused=True), _row("unseen", None, None, 0, refused=False),
    ]).astype({"score": "Int64", "oracle_score": "Int64"})
    m = audit_metrics(table)
    assert m[recall_metric("unchanged")] == 0.5 and m[recall_metric("hue")] == 0.0
    assert m[forget_quality_metric("unchanged")] == 5 / 8 and m[forget_quality_metric("unchanged", "oracle")] == 1.0
    assert m[forget_quality_metric("hue")] == 0.0 and m[forget_quality_metric("hue", "oracle")] == 0.75
    assert m[over_refusal_metric("retain")] == 0.5  # one to an expert, one refused by the base model
    assert m[over_refusal_metric("retain_named")] == 0.5
    # Distractors, like never-seen entities, count the route only; the base model's refusals apart.
    assert m[over_refusal_metric("distractor")] == 0.25 and m[refusal_metric("distractor")] == 0.25
    assert not any(k.startswith(("router/retain", "router/distractor", "forget_quality/distractor")) for k in m)
    assert m[over_refusal_metric("unseen")] == 0.25 and m[refusal_metric("unseen")] == 0.75
    assert recall_metric("hue") == "router/hue/recall" and forget_quality_metric("hue", "oracle") == "forget_quality/hue/oracle"
    matrix = confusion(table)
    assert list(matrix.index) == ["A", "B", "base"] == list(matrix.columns)
    assert matrix.loc["A", "A"] == 1 and matrix.loc["A", "base"] == 1 and matrix.loc["B", "A"] == 1
    assert matrix.loc["base", "A"] == 1 and matrix.loc["base", "base"] == 3 and matrix.to_numpy().sum() == 8
    ci = audit_intervals(table, n_boot=200).set_index(["probe", "measure"])
    assert ci.loc[("unchanged", "recall"), "value"] == 0.5
    assert ci.loc[("unchanged", "recall"), "low"] <= 0.5 <= ci.loc[("unchanged", "recall"), "high"]
    assert ci.loc[("retain", "over_refusal"), "value"] == 0.5 and ci.loc[("unseen", "over_refusal"), "n"] == 4
