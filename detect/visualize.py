"""Drawing detections on a copy of an image (``detect run --save-vis``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from backbone.files import atomic_path
from detect.structures import Detections


#: Fixed palette (RGB hex), one colour per class label in turn: 20 hues far apart in hue and brightness
#: (the palette ultralytics draws with), so neighbouring labels never get near-identical colours.
PALETTE_HEX = ("FF3838", "2C99A8", "FF9D97", "00C2FF", "FF701F", "344593", "FFB21D", "6473FF", "CFD231",
               "0018EC", "48F90A", "8438FF", "92CC17", "520085", "3DDB86", "CB38FF", "1A9334", "FF95C8",
               "00D4BB", "FF37C7")


def colour(label: int) -> tuple[int, int, int]:
    """The BGR colour of class ``label`` (1..K): the palette's entries in turn, repeating after 20."""
    h = PALETTE_HEX[(int(label) - 1) % len(PALETTE_HEX)]
    r, g, b = (int(h[i: i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def text_colour(background_bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (relative luminance, ITU-R BT.709 weights)."""
    b, g, r = background_bgr
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def draw_detections(image: np.ndarray, detections: Detections, class_names: Sequence[str]) -> np.ndarray:
    """Return a BGR copy of ``image`` (``np.ndarray[H, W, 3]`` uint8 RGB) with boxes and "name score" tags.

    Each class has its palette colour (:func:`colour`); a tag is the box's colour with black or white text,
    whichever reads better, kept inside the image. Line width and font size follow the image size so tags
    stay legible on small and large photos.
    """
    canvas = np.ascontiguousarray(image[:, :, ::-1]).copy()
    h, w = canvas.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    font_scale = max(0.35, min(h, w) / 1000)
    font_thick = max(1, thick - 1)
    # draw low scores first so the best detections end up on top
    order = np.argsort(detections.scores.numpy(), kind="stable")
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in detections.boxes[i].tolist())
        label = int(detections.labels[i])
        box_colour = colour(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), box_colour, thick, cv2.LINE_AA)
        text = f"{class_names[label - 1]} {float(detections.scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thick)
        tx = min(max(0, x1), max(0, w - tw - 2))  # keep the tag inside the image
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else min(max(0, y1), max(0, h - th - base - 2))
        cv2.rectangle(canvas, (tx, top), (tx + tw + 2, top + th + base + 2), box_colour, -1)
        cv2.putText(canvas, text, (tx + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    text_colour(box_colour), font_thick, cv2.LINE_AA)
    return canvas


def save_visualization(path: str | os.PathLike, image: np.ndarray, detections: Detections,
                       class_names: Sequence[str], *, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Draw and write ``path`` atomically (never over one of ``inputs``). Returns the path written."""
    out = Path(path)
    canvas = draw_detections(image, detections, class_names)
    ok, buf = cv2.imencode(out.suffix or ".jpg", canvas)
    if not ok:
        raise ValueError(f"cannot encode {out.suffix!r} images")
    with atomic_path(out, inputs=inputs) as tmp:
        tmp.write_bytes(buf.tobytes())
    return out
