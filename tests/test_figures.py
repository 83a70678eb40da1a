"""The degradation plot keeps every method visible when their lines coincide (at 0 after a
collapse, once they hid one another): the real PNG, read back pixel by pixel."""

import numpy as np
from PIL import Image

from mlu_training.figures import degradation_png

TAB10 = {"ga": (0x1F, 0x77, 0xB4), "idk": (0xFF, 0x7F, 0x0E), "npo": (0x2C, 0xA0, 0x2C)}  # drawn in this order


def test_lines_at_zero_do_not_hide_each_other(tmp_path):
    zeros = (["A", "B", "C", "D"], [0.0] * 4, [0.0] * 4, [0.0] * 4)
    path = degradation_png({m: zeros for m in TAB10}, "utility", "A", tmp_path / "d.png")
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    height, width, _ = pixels.shape
    strip = pixels[int(height * 0.72):int(height * 0.92), int(width * 0.08):]  # around y = 0, below the legend
    for method, colour in TAB10.items():
        seen = (np.abs(strip - np.array(colour)).sum(axis=2) < 40).sum()
        assert seen > 20, f"{method}'s line cannot be seen ({seen} pixels of its colour)"
