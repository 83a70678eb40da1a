"""A deterministic stand-in for the crawled images, which the release does not ship.

Each class has a backdrop of its own (a pattern and a border hue), so the class can be told at a
glance, as a router's first step needs. Each entity has a signature drawn from a seed of its name:
three shapes with their own kinds, colours, sizes and places on a 3x3 grid. Each image path is a
seeded variation of its entity's signature (shift, per-shape jitter, colour jitter, noise), so
two images of one entity look alike without being equal, and a model must recognise the entity
by looking, on renders it has not seen. Same inputs, same bytes.

That variation is small: a nearest centroid in pixel space names every one of the 127 entities on
unseen renders (tests/test_data.py). A `Variation` draws each picture further from the signature
("shapes-v2"): its own backdrop colour, the palette's hue turned and brightened, and as the
variation says, the arrangement mirrored, turned, scaled and shifted. The more it varies, the
fewer entities pixels alone name (0.86 for `recoloured`, 0.38 for `posed`), but the fewer the tiny
base model recognises too (scripts/renderer_tradeoff.py measures both; README "The renderer's
variation"), so the benchmark's pictures stay shapes-v1 and the variations serve that measurement.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RENDERER_VERSION = "shapes-v1"
VARIED_RENDERER_VERSION = "shapes-v2"  # a `Variation`'s pictures
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
CLASS_STYLE = {  # pattern, border hue
    "Animals": ("hstripes", 0.08), "Astronomy": ("dark", 0.66), "Buildings": ("vstripes", 0.0),
    "Cartoon": ("checker", 0.83), "Corporation": ("plain", 0.55), "Movies": ("diagonal", 0.95),
    "Personage": ("dots", 0.33), "Plants": ("gradient", 0.25), "TV series": ("grid", 0.15),
}


def _rng(*parts: str) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _colour(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class Variation:
    """How far each picture of an entity strays from its signature under shapes-v2 (each picture
    also draws its own backdrop colour, and jitters each shape's place, hue and size a little)."""

    hue_turn: float  # the whole palette's hue turned by up to this, either way (of the colour wheel)
    mirror_share: float  # of the pictures, the arrangement mirrored left to right
    turn_degrees: float  # the arrangement turned by up to this, either way
    scale: tuple[float, float]  # the arrangement scaled by a factor in this range
    shift: float  # and moved by up to this share of the side, each axis
    brightness: tuple[float, float] = (0.8, 1.15)


VARIATIONS = {  # from least to most: what scripts/renderer_tradeoff.py measures
    "recoloured": Variation(hue_turn=0.2, mirror_share=0.0, turn_degrees=0, scale=(0.95, 1.05), shift=0.03),
    "recoloured-moved": Variation(hue_turn=0.35, mirror_share=0.0, turn_degrees=0, scale=(0.9, 1.05), shift=0.04),
    "posed": Variation(hue_turn=0.2, mirror_share=0.5, turn_degrees=15, scale=(0.75, 1.1), shift=0.06),
}


@dataclass(frozen=True)
class Signature:
    background: tuple[int, int, int] | None  # shapes-v2 draws one per picture instead
    shapes: tuple[tuple[str, tuple[int, int, int], float, float, float], ...]  # kind, rgb, cx, cy, r


def entity_signature(class_name: str, entity_id: str, seed: int = 0, version: str = RENDERER_VERSION) -> Signature:
    rng = _rng(version, str(seed), "entity", class_name, entity_id)
    background = None
    if version == RENDERER_VERSION:
        background = _colour(rng.random(), 0.15 + 0.2 * rng.random(), 0.75 + 0.2 * rng.random())
    cells = rng.choice(9, size=3, replace=False)
    shapes = []
    for cell in cells:
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        rgb = _colour(rng.random(), 0.7 + 0.3 * rng.random(), 0.35 + 0.6 * rng.random())
        cx = (cell % 3 + 0.5) / 3
        cy = (cell // 3 + 0.5) / 3
        radius = 0.11 + 0.07 * rng.random()
        shapes.append((kind, rgb, cx, cy, radius))
    return Signature(background, tuple(shapes))


def _backdrop(draw: ImageDraw.ImageDraw, size: int, class_name: str, bg: tuple[int, int, int]) -> None:
    pattern, hue = CLASS_STYLE.get(class_name, ("plain", 0.0))
    ink = _colour(hue, 0.5, 0.55)
    if pattern == "dark":
        bg = tuple(int(c * 0.25) for c in bg)
    draw.rectangle([0, 0, size, size], fill=bg)
    step = size // 8
    for i in range(0, size, step):
        if pattern == "hstripes" and (i // step) % 2:
            draw.rectangle([0, i, size, i + step // 3], fill=ink)
        elif pattern == "vstripes" and (i // step) % 2:
            draw.rectangle([i, 0, i + step // 3, size], fill=ink)
        elif pattern == "diagonal":
            draw.line([i, 0, 0, i], fill=ink, width=max(1, step // 4))
        elif pattern == "grid":
            draw.line([i, 0, i, size], fill=ink, width=max(1, step // 6))
            draw.line([0, i, size, i], fill=ink, width=max(1, step // 6))
        elif pattern == "dots":
            for j in range(0, size, step):
                draw.ellipse([i + step // 3, j + step // 3, i + step // 2, j + step // 2], fill=ink)
        elif pattern == "checker":
            for j in range(0, size, step):
                if (i // step + j // step) % 2:
                    draw.rectangle([i, j, i + step // 2, j + step // 2], fill=ink)
        elif pattern == "gradient":
            shade = tuple(int(c * (0.7 + 0.3 * i / size)) for c in ink)
            draw.rectangle([0, i, size, i + step], fill=shade)
    border = max(2, size // 16)
    draw.rectangle([0, 0, size - 1, size - 1], outline=_colour(hue, 0.9, 0.9), width=border)


def _shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, rgb) -> None:
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == "circle":
        draw.ellipse(box, fill=rgb)
    elif kind == "square":
        draw.rectangle(box, fill=rgb)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=rgb)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=rgb)
    elif kind == "ring":
        draw.ellipse(box, outline=rgb, width=max(1, int(r * 0.45)))
    elif kind == "cross":
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=rgb)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=rgb)


def render_image(class_name: str, entity_id: str, image_path: str, size: int = 32, seed: int = 0,
                 backdrop_class: str | None = None, variation: Variation | None = None) -> Image.Image:
    """The synthetic picture for one image path of the release; `backdrop_class` draws it on that
    class's backdrop instead of its own (the robustness audit's `backdrop` probe); `variation`
    draws the shapes-v2 picture instead."""
    if variation is not None:
        return _render_varied(class_name, entity_id, image_path, size, seed, backdrop_class, variation)
    sig = entity_signature(class_name, entity_id, seed)
    rng = _rng(RENDERER_VERSION, str(seed), "image", image_path)
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(canvas)
    _backdrop(draw, big, backdrop_class or class_name, sig.background)
    dx, dy = rng.uniform(-0.06, 0.06, size=2)
    for kind, rgb, cx, cy, r in sig.shapes:
        jx, jy = rng.uniform(-0.03, 0.03, size=2)
        scale = rng.uniform(0.85, 1.15)
        tint = np.clip(np.array(rgb) + rng.integers(-18, 19, size=3), 0, 255)
        _shape(draw, kind, (cx + dx + jx) * big, (cy + dy + jy) * big, r * scale * big, tuple(int(c) for c in tint))
    return _finish(canvas, size, rng)


def _render_varied(class_name: str, entity_id: str, image_path: str, size: int, seed: int,
                   backdrop_class: str | None, variation: Variation) -> Image.Image:
    sig = entity_signature(class_name, entity_id, seed, VARIED_RENDERER_VERSION)
    rng = _rng(VARIED_RENDERER_VERSION, str(seed), "image", image_path)
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(canvas)
    background = _colour(rng.random(), 0.1 + 0.3 * rng.random(), 0.65 + 0.3 * rng.random())
    _backdrop(draw, big, backdrop_class or class_name, background)
    hue_turn = rng.uniform(-variation.hue_turn, variation.hue_turn)
    brightness = rng.uniform(*variation.brightness)
    mirrored = rng.random() < variation.mirror_share
    angle = np.deg2rad(rng.uniform(-variation.turn_degrees, variation.turn_degrees))
    scale = rng.uniform(*variation.scale)
    dx, dy = rng.uniform(-variation.shift, variation.shift, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    for kind, rgb, cx, cy, r in sig.shapes:
        x, y = (0.5 - cx if mirrored else cx - 0.5), cy - 0.5  # about the picture's centre
        x, y = (cos * x - sin * y) * scale, (sin * x + cos * y) * scale
        jx, jy = rng.uniform(-0.02, 0.02, size=2)
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
        colour = _colour(h + hue_turn + rng.uniform(-0.02, 0.02), s, min(1.0, v * brightness))
        radius = r * scale * rng.uniform(0.9, 1.1)
        _shape(draw, kind, (0.5 + x + dx + jx) * big, (0.5 + y + dy + jy) * big, radius * big, colour)
    return _finish(canvas, size, rng)


def _finish(canvas: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Down to `size` (the supersampled drawing smooths the edges), plus seeded pixel noise."""
    small = canvas.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.int16) + rng.normal(0, 6, size=(size, size, 3)).round().astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def nearest_centroids(entities: list[tuple[str, str]], variation: Variation | None = None, size: int = 32,
                      renders: int = 6, asked: tuple[int, ...] = (100, 101, 102)) -> list[tuple[int, int]]:
    """How far raw pixels alone tell the entities apart: each (class, entity)'s centroid over its
    first `renders` pictures, then for each of its `asked` pictures (never among them), the pair
    (its index, the index of the nearest centroid by mean absolute difference)."""
    def pixels(cls: str, ent: str, i: int) -> np.ndarray:
        picture = render_image(cls, ent, f"downloaded_images/{cls}/{ent}/{i}.jpg", size, variation=variation)
        return np.asarray(picture, dtype=np.float32).ravel()

    centroids = np.stack([np.mean([pixels(c, e, i) for i in range(renders)], axis=0) for c, e in entities])
    return [(k, int(np.abs(centroids - pixels(c, e, i)).mean(1).argmin()))
            for k, (c, e) in enumerate(entities) for i in asked]


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
