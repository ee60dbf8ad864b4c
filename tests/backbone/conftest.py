"""Fixtures for the backbone tests: a small real ImageFolder made of coco128 object crops.

``coco_crops``: the ground-truth boxes of coco128's 5 most frequent categories (boxes at least 24 px on
each side, crowd boxes skipped, at most 40 per class, the first ones in annotation order), cut out of
the images and resized so the shorter side is 72 px, written as JPEGs to ``ROOT/<category>/<id>.jpg``.
Built once per session under pytest's tmp folder (about a second); nothing is stored in the repo.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import cv2
import pytest

from backbone.images import read_image

NUM_CLASSES = 5
PER_CLASS = 40
MIN_SIDE = 24
SHORT_SIDE = 72


@pytest.fixture(scope="session")
def coco_crops(coco128: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageFolder root with crops of coco128's 5 most frequent categories (see the module docstring)."""
    data = json.loads(Path(coco128["annotations"]).read_text())
    names = {c["id"]: c["name"].replace(" ", "_") for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    boxes = [a for a in data["annotations"]
             if not a.get("iscrowd") and min(a["bbox"][2], a["bbox"][3]) >= MIN_SIDE]
    frequent = [c for c, _ in collections.Counter(a["category_id"] for a in boxes).most_common(NUM_CLASSES)]
    root = tmp_path_factory.mktemp("coco_crops")
    taken: collections.Counter[int] = collections.Counter()
    cache: dict[int, object] = {}
    for a in boxes:
        cat = a["category_id"]
        if cat not in frequent or taken[cat] >= PER_CLASS:
            continue
        if a["image_id"] not in cache:
            cache[a["image_id"]] = read_image(Path(coco128["images"]) / files[a["image_id"]])
        image = cache[a["image_id"]]
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        crop = image[y:y + h, x:x + w]
        f = SHORT_SIDE / min(crop.shape[:2])
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                          interpolation=cv2.INTER_AREA)
        out = root / names[cat] / f"{a['id']}.jpg"
        out.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        taken[cat] += 1
    return root
