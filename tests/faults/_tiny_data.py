"""Tiny training sets for the fault tests: an ImageFolder tree and a COCO data set of small pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def picture(h: int, w: int, seed: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Noise over a gradient, with an optional bright rectangle ``(x1, y1, x2, y2)``; ``uint8[H, W, 3]``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 200 // w, y * 200 // h, np.full_like(x, 60)], -1) + rng.integers(0, 40, (h, w, 3))
    if box is not None:
        x1, y1, x2, y2 = box
        img[y1:y2, x1:x2] = (240, 40 + 60 * (seed % 3), 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def image_folder(root: Path, *, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4, size: int = 36) -> Path:
    """``root/<class>/<i>.png``: ``per_class`` pictures of ``size`` px per class."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(picture(size, size, 10 * c + i)).save(root / name / f"{i}.png")
    return root


def coco_set(root: Path, *, images: int = 4, width: int = 64, height: int = 48) -> tuple[Path, Path]:
    """``root/images/*.png`` and ``root/instances.json``: one or two boxes per image, two categories."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "red"}, {"id": 3, "name": "orange"}]}
    for i in range(images):
        box = (6 + 3 * i, 5 + 2 * i, 30 + 4 * i, 30 + i)
        Image.fromarray(picture(height, width, i, box)).save(img_dir / f"{i + 1:03d}.png")
        data["images"].append({"id": i + 1, "file_name": f"{i + 1:03d}.png", "width": width, "height": height})
        boxes = [box] + ([(40, 8, 60, 40)] if i % 2 else [])
        for j, (x1, y1, x2, y2) in enumerate(boxes):
            data["annotations"].append({"id": 10 * i + j + 1, "image_id": i + 1, "category_id": 1 if j == 0 else 3,
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                        "iscrowd": 0})
    ann = root / "instances.json"
    ann.write_text(json.dumps(data))
    return ann, img_dir
