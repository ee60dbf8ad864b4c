"""`detect run --save-vis` drawing: a fixed palette with distinct colours per class, tags readable and inside
the image (issue 12 part 6)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from detect.structures import Detections
from detect.visualize import PALETTE_HEX, colour, draw_detections, text_colour


def _lab(bgr: tuple[int, int, int]) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.array([[bgr]], np.uint8), cv2.COLOR_BGR2LAB)[0, 0].astype(float)


def test_palette_colours_are_fixed_and_far_apart():
    assert colour(1) == (0x38, 0x38, 0xFF)  # BGR of FF3838: fixed, not derived at run time
    colours = [colour(k) for k in range(1, len(PALETTE_HEX) + 1)]
    assert len(set(colours)) == len(PALETTE_HEX)
    distances = [np.linalg.norm(_lab(a) - _lab(b)) for a, b in itertools.combinations(colours, 2)]
    assert min(distances) > 20  # CIELAB (OpenCV's 8-bit scale): no two classes look alike
    adjacent = [np.linalg.norm(_lab(colours[k]) - _lab(colours[k + 1])) for k in range(len(colours) - 1)]
    assert min(adjacent) > 60  # labels next to each other (often related classes) differ strongly
    assert colour(1) == colour(1 + len(PALETTE_HEX))


def test_text_contrasts_with_its_tag():
    for k in range(1, len(PALETTE_HEX) + 1):
        bg, fg = _lab(colour(k))[0], _lab(text_colour(colour(k)))[0]
        assert abs(bg - fg) > 90, PALETTE_HEX[k - 1]  # lightness difference on OpenCV's 0..255 scale


def test_tags_stay_inside_the_image():
    image = np.full((60, 80, 3), 128, np.uint8)
    dets = Detections(torch.tensor([[70.0, 0.0, 80.0, 10.0]]), torch.tensor([0.9]), torch.tensor([2]))
    canvas = draw_detections(image, dets, ["person", "a rather long class name"])
    tag = np.all(canvas == colour(2), axis=2)  # pixels filled with the tag colour
    assert tag[:, :10].any(), "a tag at the right edge is moved left, not cut off"
    assert tag[0:20].any()


def test_tag_text_is_white_on_dark_and_black_on_light_tags():
    image = np.full((120, 200, 3), 128, np.uint8)
    for label, ink in [(6, 255), (7, 0)]:  # 344593 dark blue -> white text; FFB21D amber -> black text
        dets = Detections(torch.tensor([[20.0, 40.0, 180.0, 110.0]]), torch.tensor([0.9]), torch.tensor([label]))
        canvas = draw_detections(image, dets, [f"class{k}" for k in range(1, 21)])
        tag = canvas[20:40, 20:120].reshape(-1, 3)  # the tag sits above the box
        assert (np.abs(tag.astype(int) - ink).max(axis=1) < 40).sum() > 10, label
