"""One image for every image path of the release: the official file when the user has the
crawled images (`MLU_IMAGES_DIR`), otherwise a synthetic render (see render.py)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from ..paths import atomic_write_bytes
from .records import IMAGE_PATH
from .render import RENDERER_VERSION, png_bytes, render_image

CRAWL_COLUMNS = ["image", "file", "source", "sha256", "bytes", "width", "height", "url", "licence"]
IMAGE_PREFIX = "downloaded_images/"


class CorruptImagesError(ValueError):
    """Official images that exist but cannot be read. Never replaced behind the user's back."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        shown = "\n".join(f"  {path}: {why}" for path, why in problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} official image(s) could not be read:\n{shown}{more}")


def synthetic_dir(data_dir: Path, size: int, seed: int) -> Path:
    return Path(data_dir) / "images" / f"{RENDERER_VERSION}-{size}px-seed{seed}"


def _row(image: str, file: Path, source: str, payload: bytes, width: int, height: int) -> dict:
    return {"image": image, "file": str(file), "source": source,
            "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload),
            "width": width, "height": height, "url": None, "licence": None}


def build_raw_crawls(image_paths: list[str], data_dir: Path, size: int, seed: int = 0,
                     official_dir: Path | None = None) -> pd.DataFrame:
    """Materialise an image file for every path; returns the provenance table.

    Paths that are not of the form downloaded_images/<Class>/<Entity>/<file> get no image: the
    `validated_qa_pairs` checks then name the rows that use them.
    """
    out_dir = synthetic_dir(data_dir, size, seed)
    rows, corrupt = [], []
    for image in sorted(set(image_paths)):
        m = IMAGE_PATH.match(image)
        if not m or ".." in image.split("/"):
            continue
        official = Path(official_dir) / image[len(IMAGE_PREFIX):] if official_dir else None
        if official is not None and official.is_file():
            payload = official.read_bytes()
            try:
                with warnings.catch_warnings():  # a decompression bomb is an unreadable image, with its path
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(official) as im:
                        im.load()
                        width, height = im.size
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning) as e:
                corrupt.append((str(official), f"{type(e).__name__}: {e}"))
                continue
            rows.append(_row(image, official, "official", payload, width, height))
            continue
        target = out_dir / (image[len(IMAGE_PREFIX):].rsplit(".", 1)[0] + ".png")
        if target.is_file():
            payload = target.read_bytes()  # renders are deterministic: keep what is there
        else:
            payload = png_bytes(render_image(m["cls"], m["entity"], image, size=size, seed=seed))
            atomic_write_bytes(target, payload)
        rows.append(_row(image, target, "synthetic", payload, size, size))
    if corrupt:
        raise CorruptImagesError(corrupt)
    return pd.DataFrame(rows, columns=CRAWL_COLUMNS)
