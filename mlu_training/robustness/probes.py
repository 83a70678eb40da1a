"""Evasion probes: each forget item asked the way a user (or an attacker) could ask it instead,
to see whether LUMoE's router still sends it to its expert. PIL and numpy only.

- image probes, on the item's own picture: a centre crop to half, a rotation, a Gaussian blur,
  Gaussian noise, a hue shift, a downscale to half and back;
- text probes, with a blank picture (the model needs one): a question that names the entity by
  its display name (`named`), or by another name (`other_name`: the release's alias where it has
  one, else the name written in Cyrillic letters: a script the router has never read);
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


IMAGE_PROBES: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "crop": centre_crop_half, "rotate": rotate, "blur": blur, "noise": noise, "hue": hue_shift,
    "downscale": downscale_half,
}
TEXT_PROBES = ("named", "other_name")
PROBES = ("unchanged", "paraphrase", *IMAGE_PROBES, *TEXT_PROBES)

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


def blank_like(image: Image.Image) -> Image.Image:
    return Image.new("RGB", image.size, BLANK)


def item_seed(image_path: str, probe: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{probe}\x1f{image_path}".encode()).digest()[:4], "little")


def probe_items(forget: pd.DataFrame, load_image, names: dict[str, list[str]],
                probes: tuple[str, ...] = PROBES) -> dict[str, tuple[pd.DataFrame, list[Image.Image]]]:
    """probe -> (its items, one picture per item): `forget` (evaluation items of forget entities,
    with their variant) changed as each probe says. Items keep their qa_id, entity and answer; a
    text probe skips entities it has no name for."""
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
