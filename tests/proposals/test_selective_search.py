"""Selective search: features, grouping, ranking, odd inputs, and recall on real coco128 images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from backbone.images import read_image
from proposals import ss_segment
from proposals.metrics import proposal_recall
from proposals.selective_search import (SelectiveSearchConfig, selective_search, selective_search_arrays,
                                        selective_search_many)
from proposals.ss_features import adjacency, colour_bins, region_features, texture_bins
from proposals.ss_grouping import hierarchical_grouping
from proposals.ss_segment import COLOUR_SPACES, convert_colour, felzenszwalb_multi
from proposals.structures import Proposals

SMALL = SelectiveSearchConfig.rcnn("fast", width=None, min_size=4)

# three objects on a noisy grey background: (x1, y1, x2, y2) and how they are drawn
RECTS = [(10, 8, 40, 36), (60, 14, 112, 44), (22, 56, 74, 88)]


def scene(rng: np.random.Generator) -> np.ndarray:
    img = rng.normal(128, 6, size=(96, 128, 3)).clip(0, 255).astype(np.uint8)
    img[8:36, 10:40] = (220, 30, 30)  # solid red
    img[14:44, 60:112] = (30, 200, 40)  # solid green
    stripes = np.where((np.arange(52) // 3) % 2 == 0, 240, 20).astype(np.uint8)  # vertical stripes
    img[56:88, 22:74] = np.stack([stripes * 0, stripes * 0, stripes], axis=1)[None]
    return img


def test_each_object_of_a_synthetic_scene_is_found(rng: np.random.Generator) -> None:
    props = selective_search(scene(rng), SMALL)
    gt = torch.tensor(RECTS, dtype=torch.float32)
    best = box_iou(gt, props.boxes).max(dim=1).values
    assert (best >= 0.5).all(), best
    assert (best >= 0.9).all(), best  # solid objects come out (almost) exactly


def test_output_contract(rng: np.random.Generator) -> None:
    img = scene(rng)
    props = selective_search(img, SMALL)
    assert isinstance(props, Proposals) and len(props) > 3
    assert props.boxes.dtype == torch.float32 and props.scores.dtype == torch.float32
    assert (props.sources == 0).all()
    b = props.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 128).all() and (b[:, 3] <= 96).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert (props.scores[:-1] >= props.scores[1:]).all()  # sorted by rank
    assert torch.unique(b, dim=0).shape[0] == b.shape[0]  # duplicates removed
    assert ((b == torch.tensor([0.0, 0.0, 128.0, 96.0])).all(dim=1)).any()  # whole image present


def test_seeded_ranking(rng: np.random.Generator) -> None:
    img = scene(rng)
    a = selective_search(img, SMALL)
    b = selective_search(img, SMALL)
    c = selective_search(img, SelectiveSearchConfig.rcnn("fast", width=None, min_size=4, seed=1))
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
    assert not torch.equal(a.boxes, c.boxes)  # another order ...
    key = lambda x: sorted(map(tuple, x.boxes.tolist()))  # noqa: E731
    assert key(a) == key(c)  # ... of the same boxes


def test_threads_and_processes_give_the_same_result(rng: np.random.Generator, tmp_path) -> None:
    img = scene(rng)
    ref = selective_search(img, SMALL)
    assert torch.equal(selective_search(img, SMALL, workers=2).boxes, ref.boxes)
    box_iou(ref.boxes, ref.boxes)  # the parent has run torch and OpenCV threads before forking: must not hang
    import cv2
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    many = selective_search_many([img, path, img[:48]], SMALL, workers=2)
    assert len(many) == 3
    assert torch.equal(many[0].boxes, ref.boxes) and torch.equal(many[1].boxes, ref.boxes)
    assert torch.equal(many[2].boxes, selective_search(img[:48], SMALL).boxes)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5000), (5000, 1), (7, 3, 1)])
def test_degenerate_shapes_give_the_whole_image(shape: tuple[int, ...], rng: np.random.Generator) -> None:
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    props = selective_search(img)  # default config: min_size 20, max_width 500
    h, w = shape[:2]
    whole = torch.tensor([0.0, 0.0, w, h])
    assert (props.boxes == whole).all(dim=1).any()
    assert (props.boxes[:, 2] <= w).all() and (props.boxes[:, 3] <= h).all()


def test_uniform_image_yields_the_whole_image_box() -> None:
    props = selective_search(np.full((40, 60, 3), 77, np.uint8), SMALL)
    assert props.boxes.tolist() == [[0.0, 0.0, 60.0, 40.0]]


def test_grey_and_rgba_inputs(rng: np.random.Generator) -> None:
    rgb = scene(rng)
    grey = rgb.mean(axis=2).astype(np.uint8)
    props = selective_search(grey, SMALL)
    assert len(props) > 3
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    assert torch.equal(selective_search(rgba, SMALL).boxes, selective_search(rgb, SMALL).boxes)
    with pytest.raises(ValueError, match="uint8"):
        selective_search(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        selective_search(np.zeros((4, 4, 2), np.uint8))


def test_wide_image_is_resized_and_boxes_mapped_back(rng: np.random.Generator) -> None:
    big = np.repeat(np.repeat(scene(rng), 10, axis=0), 10, axis=1)  # 960 x 1280
    props = selective_search(big, SelectiveSearchConfig.rcnn("fast", width=128, min_size=20))
    gt = torch.tensor(RECTS, dtype=torch.float32) * 10
    assert props.boxes[:, 2].max() == 1280 and props.boxes[:, 3].max() == 960
    assert (box_iou(gt, props.boxes).max(dim=1).values >= 0.9).all()


def test_superpixel_scale_reduces_boxes(rng: np.random.Generator) -> None:
    img = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    one = selective_search_arrays(img, SMALL)[0]
    two = selective_search_arrays(img, SelectiveSearchConfig.rcnn("fast", width=None, min_size=4, superpixel_scale=2))[0]
    assert 0 < len(two) < len(one)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="strategy"):
        SelectiveSearchConfig(strategy="fastest")
    with pytest.raises(ValueError, match="superpixel_scale"):
        SelectiveSearchConfig(superpixel_scale=0)


@pytest.mark.parametrize("strategy", ["single", "quality"])
def test_other_strategies(strategy: str, rng: np.random.Generator) -> None:
    img = scene(rng)[::2, ::2].copy()
    props = selective_search(img, SelectiveSearchConfig.for_strategy(strategy, width=None, min_size=2))
    gt = torch.tensor(RECTS, dtype=torch.float32) / 2
    assert (box_iou(gt, props.boxes).max(dim=1).values >= 0.5).all()


# ---- the pieces --------------------------------------------------------------------------------------

@pytest.mark.parametrize("space", COLOUR_SPACES)
def test_colour_and_texture_histograms_are_normalised(space: str, rng: np.random.Generator) -> None:
    img = convert_colour(scene(rng), space)
    labels = felzenszwalb_multi(img, (50,))[0]
    feats = region_features(labels, colour_bins(img), texture_bins(img))
    r = int(labels.max()) + 1
    channels = img.shape[2]
    assert feats.colour.shape == (r, 25 * channels) and feats.texture.shape == (r, 80 * channels)
    np.testing.assert_allclose(feats.colour.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(feats.texture.sum(axis=1), 1.0, rtol=1e-5)
    # histogram intersection of a region with itself is 1, with another region at most 1
    inter = np.minimum(feats.colour[:, None], feats.colour[None]).sum(axis=2)
    np.testing.assert_allclose(np.diag(inter), 1.0, rtol=1e-5)
    assert inter.max() <= 1.0 + 1e-5
    assert feats.sizes.sum() == labels.size


def test_region_features_by_hand() -> None:
    # 2 x 4 image: left half region 0 (black), right half region 1 (white)
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.int32)
    img = np.zeros((2, 4, 3), np.uint8)
    img[:, 2:] = 255
    feats = region_features(labels, colour_bins(img), texture_bins(img))
    assert feats.sizes.tolist() == [4.0, 4.0]
    assert feats.boxes.tolist() == [[0, 0, 2, 2], [2, 0, 4, 2]]
    assert feats.pairs.tolist() == [[0, 1]]
    assert feats.colour[0, [0, 25, 50]].tolist() == pytest.approx([1 / 3] * 3)  # bin 0 of each channel
    assert feats.colour[1, [24, 49, 74]].tolist() == pytest.approx([1 / 3] * 3)  # last bin of each channel
    assert np.minimum(feats.colour[0], feats.colour[1]).sum() == 0.0


def test_adjacency_is_four_connected() -> None:
    labels = np.array([[0, 1], [2, 3]])
    assert adjacency(labels).tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]  # no diagonal 0-3 or 1-2
    assert adjacency(np.zeros((3, 3), int)).shape == (0, 2)


def test_grouping_merges_most_similar_first() -> None:
    # four 1-pixel-high strips in a row: colours 0, 0, 200, 210 -> 0+1 merge first, then 2+3, then all
    labels = np.repeat(np.arange(4, dtype=np.int32), 5)[None].repeat(5, axis=0)
    img = np.zeros((5, 20, 3), np.uint8)
    img[:, 10:15] = 200
    img[:, 15:] = 210
    feats = region_features(labels, colour_bins(img), texture_bins(img))
    boxes = hierarchical_grouping(feats, "C", image_area=100.0)
    assert boxes.shape == (7, 4)
    assert boxes[4].tolist() == [0, 0, 10, 5]
    assert boxes[5].tolist() == [10, 0, 20, 5]
    assert boxes[6].tolist() == [0, 0, 20, 5]
    with pytest.raises(ValueError, match="subset"):
        hierarchical_grouping(feats, "CX", 100.0)


def test_felzenszwalb_separates_halves_and_merges_uniform(monkeypatch: pytest.MonkeyPatch) -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 255
    for numba_on in (True, False):  # compiled kernel and the scikit-image fallback agree here
        if not numba_on:
            monkeypatch.setattr(ss_segment, "HAVE_NUMBA", False)
        two = felzenszwalb_multi(img, (50, 100))
        assert [int(lab.max()) + 1 for lab in two] == [2, 2]
        assert (two[0][:, :15] == two[0][0, 0]).all() and (two[0][:, 15:] != two[0][0, 0]).all()
        one = felzenszwalb_multi(np.full((20, 30, 1), 9, np.uint8), (50,))
        assert int(one[0].max()) == 0


# ---- real images -------------------------------------------------------------------------------------

def test_recall_on_real_coco_images(coco128: dict) -> None:
    """Measured: fast mode finds all 13 ground-truth boxes of these 4 images at IoU 0.5, with about 3,000 boxes
    per image (superpixel_scale 2: 0.85, about 1,500 boxes). Bar: 0.8."""
    data = json.loads(coco128["annotations"].read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    chosen = sorted(names)[:4]
    gts = {i: [] for i in chosen}
    for ann in data["annotations"]:
        if ann["image_id"] in gts and not ann.get("iscrowd", 0):
            x, y, w, h = ann["bbox"]
            gts[ann["image_id"]].append([x, y, x + w, y + h])
    images = [read_image(coco128["images"] / names[i]) for i in chosen]
    props = [selective_search(im).boxes for im in images]
    stats = proposal_recall(props, [torch.tensor(gts[i]).reshape(-1, 4) for i in chosen])
    assert stats.recall_50 >= 0.8, stats
    assert 500 < stats.boxes_per_image < 5000, stats


def test_compiled_and_numpy_features_agree(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proposals import ss_features
    img = convert_colour(scene(rng), "lab")
    labels = felzenszwalb_multi(img, (50,))[0]
    fast = region_features(labels, colour_bins(img), texture_bins(img))
    monkeypatch.setattr(ss_features, "HAVE_NUMBA", False)
    plain = region_features(labels, colour_bins(img), texture_bins(img))
    for name in ("sizes", "boxes", "colour", "texture", "pairs"):
        np.testing.assert_allclose(getattr(fast, name), getattr(plain, name), rtol=1e-6, err_msg=name)
