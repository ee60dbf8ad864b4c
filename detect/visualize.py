"""Drawing detections on a copy of an image (``detect run --save-vis``)."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from backbone.files import atomic_path
from detect.structures import Detections


def _colour(label: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class label (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, detections: Detections, class_names: Sequence[str]) -> np.ndarray:
    """Return a BGR copy of ``image`` (``np.ndarray[H, W, 3]`` uint8 RGB) with boxes and "name score" tags.

    Line width and font size follow the image size so tags stay legible on small and large photos.
    """
    canvas = np.ascontiguousarray(image[:, :, ::-1]).copy()
    h, w = canvas.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    font_scale = max(0.35, min(h, w) / 1000)
    # draw low scores first so the best detections end up on top
    order = np.argsort(detections.scores.numpy(), kind="stable")
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in detections.boxes[i].tolist())
        label = int(detections.labels[i])
        colour = _colour(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        text = f"{class_names[label - 1]} {float(detections.scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thick - 1))
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw + 2, ty + base - 2), colour, -1)
        cv2.putText(canvas, text, (x1 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), max(1, thick - 1), cv2.LINE_AA)
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
