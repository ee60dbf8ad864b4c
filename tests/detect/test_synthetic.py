"""The synthetic shapes set (detect/synthetic.py): boxes fit the painted shapes, classes differ by shape
only, the split keeps test photographs out of training, and everything follows the seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detect.datasets import read_coco
from detect.synthetic import SHAPES, ShapesConfig, draw_image, make_shapes, shape_mask, skimage_backgrounds


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_fills_its_box(shape):
    mask = shape_mask(shape, 40, 25)
    ys, xs = np.nonzero(mask >= 0.5)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (0, 39, 0, 24)  # touches all four sides
    assert 0.3 < mask.mean() < 0.95


def test_shapes_are_distinct_masks():
    """At the same box size every pair of shapes differs on more than 10 % of the pixels (the classes can
    only be told apart by shape, so the shapes must differ)."""
    masks = {s: shape_mask(s, 30, 30) >= 0.5 for s in SHAPES}
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                assert (masks[a] != masks[b]).mean() > 0.1, (a, b)


def test_boxes_are_tight_around_painted_pixels():
    """The ground-truth box is where the shape covers at least half a pixel: painted on a flat grey photo,
    each box's border rows and columns hold pixels changed by at least half the shape's full colour change,
    and no pixel outside every box changes that much."""
    photo = np.full((400, 500, 3), 128, np.uint8)
    config = ShapesConfig(min_contrast=100.0, max_shapes=4, seed=1)
    for seed in range(5):
        image, objects = draw_image(photo, config, np.random.default_rng(seed))
        change = np.abs(image.astype(int) - 128).sum(axis=2)
        inside = np.zeros(change.shape, bool)
        for _, (x1, y1, x2, y2) in objects:
            x1, y1, x2, y2 = map(int, (x1, y1, x2, y2))
            assert 30 * 0.6 <= max(x2 - x1, y2 - y1) <= 121
            inside[y1:y2, x1:x2] = True
            box = change[y1:y2, x1:x2] >= 0.5 * change[y1:y2, x1:x2].max() - 1
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        full = max(change[int(b[1]):int(b[3]), int(b[0]):int(b[2])].max() for _, b in objects)
        assert change[~inside].max(initial=0) < 0.5 * full + 1
        boxes = [b for _, b in objects]  # shapes never overlap
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_make_shapes_writes_coco_and_follows_the_seed(tmp_path):
    config = ShapesConfig(train_images=6, test_images=3, seed=4)
    train, test = make_shapes(tmp_path / "a", skimage_backgrounds(), config)
    again, _ = make_shapes(tmp_path / "b", skimage_backgrounds(), config)
    assert not set(train.photos) & set(test.photos) and train.photos and test.photos
    data = read_coco(train.annotations, train.images)
    assert data.class_names == ["disc", "triangle", "cross"] and len(data.records) == 6
    assert sum(len(r.boxes) for r in data.records) == train.num_boxes > 0
    assert (tmp_path / "a" / "train" / "train_00000.jpg").read_bytes() == \
        (tmp_path / "b" / "train" / "train_00000.jpg").read_bytes()
    assert json.loads(train.annotations.read_text())["annotations"] == \
        json.loads(again.annotations.read_text())["annotations"]
    other, _ = make_shapes(tmp_path / "c", skimage_backgrounds(), ShapesConfig(train_images=6, test_images=3, seed=5))
    assert json.loads(other.annotations.read_text())["annotations"] != \
        json.loads(train.annotations.read_text())["annotations"]


def test_class_is_independent_of_size_and_aspect():
    """Size and aspect are drawn before and apart from the class: their distributions match per class."""
    photo = np.full((500, 500, 3), 90, np.uint8)
    config = ShapesConfig(width=(448, 448), height=(384, 384), seed=0)
    rng = np.random.default_rng(0)
    sizes: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for _ in range(150):
        for cls, (x1, y1, x2, y2) in draw_image(photo, config, rng)[1]:
            sizes[cls].append(max(x2 - x1, y2 - y1))
    medians = [np.median(v) for v in sizes.values()]
    assert all(len(v) > 60 for v in sizes.values())
    assert max(medians) / min(medians) < 1.25


def test_config_is_validated():
    with pytest.raises(ValueError):
        ShapesConfig(classes=("disc", "star"))
    with pytest.raises(ValueError):
        ShapesConfig(max_size=400)
