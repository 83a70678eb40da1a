"""Evasion probes: each forget item asked the way a user (or an attacker) could ask it instead,
to see whether LUMoE's router still sends it to its expert. PIL and numpy only.

- image probes, on the item's own picture: a centre crop to half, a rotation, a Gaussian blur,
  Gaussian noise, a hue shift, a downscale to half and back, a grey square over a seeded part of
  it (`occlude`), a mirror image (`flip`), and the same entity drawn on another class's backdrop
  (`backdrop`: a router that reads the class from the backdrop first is sent the wrong way);
- text probes, with a blank picture (the model needs one): a question that names the entity by
  its display name (`named`), or by another name (`other_name`: the release's alias where it has
  one, else the name written in Cyrillic letters: a script the router has never read);
- `unlike`: the forget question, with its own picture, prefixed by "Unlike <another entity>, "
  (an entity the model knows and nobody asked to forget): a name matcher that routes by the
  first name it reads sends it to the base model.
Retain items prefixed by "Unlike <a forgotten entity>, " are the converse, an over-refusal set of
the audit (`unlike_items`).
- `paraphrase`: the release's four rephrasings of each question (the QA table's variants 1-4),
  beside `unchanged`: every forget item as the benchmark asks it.
Every random choice is seeded by the item (its image path), so a probe is the same every run.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

ROTATION_DEGREES = 30
BLUR_RADIUS = 1.5  # pixels: on a 32-pixel render, a feature of 3 pixels is smeared out
NOISE_SD = 40  # per channel, on 0-255 (the table: sd 40)
HUE_SHIFT = 40  # of 256 steps around the colour wheel (the table: 40/256)
OCCLUDER_SHARE = 0.3  # side of the grey square, of the picture's side (10 pixels on a 32-pixel render)
OCCLUDER = (128, 128, 128)
BLANK = (255, 255, 255)


def centre_crop_half(image: Image.Image, seed: int = 0) -> Image.Image:
    """The middle half of the width and of the height (a quarter of the picture)."""
    w, h = image.size
    left, top = w // 4, h // 4
    return image.crop((left, top, left + max(1, w // 2), top + max(1, h // 2)))


def rotate(image: Image.Image, seed: int = 0) -> Image.Image:
    """Turned ROTATION_DEGREES counter-clockwise about the centre, same size, corners white."""
    return image.rotate(ROTATION_DEGREES, resample=Image.BILINEAR, fillcolor=BLANK)


def blur(image: Image.Image, seed: int = 0) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))


def noise(image: Image.Image, seed: int = 0) -> Image.Image:
    """Gaussian noise of NOISE_SD on every channel of every pixel, clipped to 0-255."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    noisy = pixels + np.random.default_rng(seed).normal(0.0, NOISE_SD, pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


def hue_shift(image: Image.Image, seed: int = 0) -> Image.Image:
    """Every colour turned HUE_SHIFT/256 round the colour wheel; saturation and brightness kept."""
    hsv = np.asarray(image.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + HUE_SHIFT) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def downscale_half(image: Image.Image, seed: int = 0) -> Image.Image:
    """Down to half the width and height and back up: the detail of the finest scale is lost."""
    w, h = image.size
    small = image.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR)
    return small.resize((w, h), Image.BILINEAR)


def occlude(image: Image.Image, seed: int = 0) -> Image.Image:
    """A grey square of OCCLUDER_SHARE of the side, at a seeded place inside the picture."""
    w, h = image.size
    side = max(1, round(OCCLUDER_SHARE * min(w, h)))
    rng = np.random.default_rng(seed)
    left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    out = image.convert("RGB").copy()
    out.paste(OCCLUDER, (left, top, left + side, top + side))
    return out


def flip(image: Image.Image, seed: int = 0) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


IMAGE_PROBES: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "crop": centre_crop_half, "rotate": rotate, "blur": blur, "noise": noise, "hue": hue_shift,
    "downscale": downscale_half, "occlude": occlude, "flip": flip,
}
BACKDROP = "backdrop"  # re-drawn, not changed: it needs the entity's class and the renderer
TEXT_PROBES = ("named", "other_name")
UNLIKE = "unlike"
PROBES = ("unchanged", "paraphrase", *IMAGE_PROBES, BACKDROP, *TEXT_PROBES, UNLIKE)

_CYRILLIC = dict(zip("abcdefghijklmnopqrstuvwxyz",
                     ["а", "б", "к", "д", "е", "ф", "г", "х", "и", "дж", "к", "л", "м", "н", "о", "п", "к", "р", "с",
                      "т", "у", "в", "в", "кс", "й", "з"]))


def cyrillic(name: str) -> str:
    """The name's Latin letters written with Cyrillic ones that sound alike ("Cat" -> "Кат");
    anything else kept."""
    out = []
    for ch in name:
        low = _CYRILLIC.get(ch.casefold())
        out.append(ch if low is None else (low[0].upper() + low[1:] if ch.isupper() else low))
    return "".join(out)


def other_name(names: list[str]) -> str | None:
    """Another name for an entity (names: display name first, then aliases): the release's first
    alias, else the display name in Cyrillic; None when neither differs from the display name."""
    if len(names) > 1:
        return names[1]
    written = cyrillic(names[0])
    return written if written != names[0] else None


def naming_question(name: str, question: str) -> str:
    return f"This is {name}. {question}"


def unlike_question(name: str, question: str) -> str:
    """"Unlike Carrot, what is this?": the question keeps its words after a comma."""
    return f"Unlike {name}, {question[:1].lower()}{question[1:]}"


def other_class(class_name: str) -> str:
    """The class after this one in the renderer's table (a fixed choice, so every run agrees)."""
    from ..data.render import CLASS_STYLE

    classes = list(CLASS_STYLE)
    return classes[(classes.index(class_name) + 1) % len(classes)] if class_name in classes else classes[0]


def on_other_backdrop(item: pd.Series, size: int, render_seed: int = 0) -> Image.Image:
    """The item's picture drawn again with another class's backdrop: the same entity, shapes and
    variation (data.render)."""
    from ..data.render import render_image

    return render_image(item["class_name"], item["entity_id"], item["image"], size=size, seed=render_seed,
                        backdrop_class=other_class(item["class_name"]))


def _names_elsewhere(items: pd.DataFrame, names: dict[str, list[str]], among: list[str]) -> list[str | None]:
    """For each item, the display name of an entity of `among` other than the item's own (a seeded
    choice by item), None when there is none."""
    pool = sorted({e for e in among if names.get(e)})
    out = []
    for entity, path in zip(items["entity_id"], items["image"]):
        others = [e for e in pool if e != entity]
        out.append(names[others[item_seed(path, UNLIKE) % len(others)]][0] if others else None)
    return out


def unlike_items(items: pd.DataFrame, names: dict[str, list[str]], among: list[str]) -> pd.DataFrame:
    """`items` whose questions start "Unlike <an entity of `among`>, " (items with no such entity
    are left out); pictures unchanged."""
    called = _names_elsewhere(items, names, among)
    keep = [c is not None for c in called]
    out = items[keep].copy()
    out["question"] = [unlike_question(c, q) for c, q in zip([c for c in called if c is not None], out["question"])]
    return out.reset_index(drop=True)


def blank_like(image: Image.Image) -> Image.Image:
    return Image.new("RGB", image.size, BLANK)


def item_seed(image_path: str, probe: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{probe}\x1f{image_path}".encode()).digest()[:4], "little")


def probe_items(forget: pd.DataFrame, load_image, names: dict[str, list[str]],
                probes: tuple[str, ...] = PROBES, others: list[str] = (), render_seed: int = 0
                ) -> dict[str, tuple[pd.DataFrame, list[Image.Image]]]:
    """probe -> (its items, one picture per item): `forget` (evaluation items of forget entities,
    with their variant and class) changed as each probe says. Items keep their qa_id, entity and
    answer; a text probe skips entities it has no name for. `others`: entities the model knows that
    nobody asked to forget (the names `unlike` borrows); `render_seed`: the renders' seed."""
    forget = forget.reset_index(drop=True)
    out = {}
    for probe in probes:
        if probe == "unchanged":
            items = forget
            images = [load_image(p) for p in items["image"]]
        elif probe == "paraphrase":
            items = forget[forget["variant"] > 0].reset_index(drop=True)
            images = [load_image(p) for p in items["image"]]
        elif probe in IMAGE_PROBES:
            items = forget
            images = [IMAGE_PROBES[probe](load_image(p), item_seed(p, probe)) for p in items["image"]]
        elif probe == BACKDROP:
            items = forget
            images = [on_other_backdrop(row, load_image(row["image"]).size[0], render_seed) for _, row in items.iterrows()]
        elif probe == UNLIKE:
            items = unlike_items(forget, names, list(others))
            images = [load_image(p) for p in items["image"]]
        elif probe in TEXT_PROBES:
            called = {e: (ns[0] if probe == "named" else other_name(ns)) for e, ns in names.items()}
            items = forget[[called.get(e) is not None for e in forget["entity_id"]]].copy()
            items["question"] = [naming_question(called[e], q) for e, q in zip(items["entity_id"], items["question"])]
            items = items.reset_index(drop=True)
            images = [blank_like(load_image(p)) for p in items["image"]]
        else:
            raise ValueError(f"unknown probe {probe!r}: one of {', '.join(PROBES)}")
        out[probe] = (items, images)
    return out
