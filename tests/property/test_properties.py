"""Property tests (hypothesis): box conversion at the COCO edge, region warping, per-class NMS, the two
evaluators, and selective search on random small images. ``max_examples`` is kept small so that the
whole file runs in seconds; ``derandomize`` makes runs repeatable (a failure shows its example)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from detect.crops import warp_regions
from detect.datasets import DetectionDataset, ImageRecord, read_coco
from detect.evaluation import evaluate_coco, evaluate_ilsvrc, results_to_detections, to_coco_results
from detect.postprocess import postprocess
from detect.structures import Detections

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------ strategies
@st.composite
def images_and_boxes(draw, max_side: int = 80, max_boxes: int = 12, inside: bool = True):
    """(width, height, Tensor[N, 4] xyxy boxes of positive size; inside the image when ``inside``)."""
    w = draw(st.integers(8, max_side))
    h = draw(st.integers(8, max_side))
    n = draw(st.integers(1, max_boxes))
    boxes = []
    for _ in range(n):
        if inside:
            x1 = draw(st.floats(0, w - 2, allow_nan=False))
            y1 = draw(st.floats(0, h - 2, allow_nan=False))
            x2 = draw(st.floats(x1 + 1, w, allow_nan=False))
            y2 = draw(st.floats(y1 + 1, h, allow_nan=False))
        else:
            x1 = draw(st.floats(-2 * w, 2 * w, allow_nan=False))
            y1 = draw(st.floats(-2 * h, 2 * h, allow_nan=False))
            x2 = x1 + draw(st.floats(1, 2 * w, allow_nan=False))
            y2 = y1 + draw(st.floats(1, 2 * h, allow_nan=False))
        boxes.append([x1, y1, x2, y2])
    return w, h, torch.tensor(boxes, dtype=torch.float32)


def _dataset(w: int, h: int, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, k: int, kind: str = "coco",
             ignore: torch.Tensor | None = None) -> DetectionDataset:
    rec = ImageRecord(image_id=1 if kind == "coco" else "img", file=Path("img.png"), width=w, height=h,
                      boxes=gt_boxes, labels=gt_labels,
                      ignore=torch.zeros(len(gt_boxes), dtype=torch.bool) if ignore is None else ignore)
    names = [f"c{i}" for i in range(1, k + 1)]
    ids: list = [10 * i for i in range(1, k + 1)] if kind == "coco" else [f"n{i:08d}" for i in range(1, k + 1)]
    return DetectionDataset(records=[rec], class_names=names, category_ids=ids, kind=kind, source=Path("memory"))


# ------------------------------------------------------------------------------------ box conversion
@FAST
@given(images_and_boxes(), st.integers(1, 4))
def test_coco_results_round_trip(data, k):
    """xyxy -> COCO xywh (to_coco_results) -> xyxy (results_to_detections) gives the boxes back."""
    w, h, boxes = data
    n = len(boxes)
    labels = torch.arange(n) % k + 1
    scores = torch.linspace(1.0, 0.1, n)
    dataset = _dataset(w, h, boxes[:1], labels[:1], k)
    rows = to_coco_results({1: Detections(boxes, scores, labels)}, dataset)
    for row, box in zip(rows, boxes.tolist()):
        x, y, bw, bh = row["bbox"]
        assert bw >= 0 and bh >= 0
        assert row["bbox"] == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]], abs=1e-4)
        assert row["category_id"] in dataset.category_ids
    back = results_to_detections(json.loads(json.dumps(rows)), dataset)[1]
    assert torch.allclose(back.boxes, boxes, atol=1e-3)
    assert torch.equal(back.labels, labels)


@FAST
@given(images_and_boxes(inside=False))
def test_read_coco_converts_and_clips_boxes(tmp_path_factory, data):
    """A COCO file's [x, y, w, h] becomes (x, y, x + w, y + h) clipped to the image; empty ones dropped."""
    w, h, boxes = data
    xywh = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes.tolist()]
    coco = {"images": [{"id": 7, "file_name": "a.png", "width": w, "height": h}],
            "annotations": [{"id": i + 1, "image_id": 7, "category_id": 3, "bbox": b} for i, b in enumerate(xywh)],
            "categories": [{"id": 3, "name": "thing"}]}
    path = tmp_path_factory.mktemp("coco") / "a.json"
    path.write_text(json.dumps(coco))
    (rec,) = read_coco(path).records
    expect = []
    for x, y, bw, bh in xywh:
        x1, y1 = min(max(x, 0), w), min(max(y, 0), h)
        x2, y2 = min(max(x + bw, 0), w), min(max(y + bh, 0), h)
        if x2 > x1 and y2 > y1:
            expect.append([x1, y1, x2, y2])
    assert rec.boxes.shape == (len(expect), 4)
    if expect:
        assert torch.allclose(rec.boxes, torch.tensor(expect, dtype=torch.float32), atol=1e-3)
    assert (rec.labels == 1).all()


# ---------------------------------------------------------------------------------------------- warp
@FAST
@given(images_and_boxes(max_side=48, max_boxes=6, inside=False), st.integers(8, 24), st.integers(0, 4),
       st.integers(0, 255))
def test_warp_shapes_and_constant_image(data, size, padding, value):
    """Output ``[P, C, size, size]``; a constant image gives constant crops (fill = the same value)."""
    w, h, boxes = data
    assume(padding * 2 < size)
    image = torch.full((3, h, w), value, dtype=torch.uint8)
    crops = warp_regions(image, boxes, size=size, padding=padding, fill=[value] * 3)
    assert crops.shape == (len(boxes), 3, size, size) and crops.dtype == torch.float32
    assert torch.allclose(crops, torch.full_like(crops, float(value)), atol=1e-3)


@FAST
@given(st.integers(8, 40), st.integers(8, 40), st.integers(8, 20), st.integers(0, 3),
       st.sampled_from(["left", "right", "above", "below"]), st.floats(1, 30))
def test_warp_box_fully_outside_is_fill(w, h, size, padding, side, gap):
    """A box (with its context) entirely outside the image warps to the fill value."""
    assume(padding * 2 < size)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    extent = 3 * max(w, h) + gap  # far enough that the dilated box cannot reach back into the image
    bw, bh = 5.0, 5.0
    x1, y1 = {"left": (-extent - bw, 0.0), "right": (w + extent, 0.0), "above": (0.0, -extent - bh),
              "below": (0.0, h + extent)}[side]
    box = torch.tensor([[x1, y1, x1 + bw, y1 + bh]])
    fill = [11.0, 22.0, 33.0]
    crop = warp_regions(image, box, size=size, padding=padding, fill=fill)
    expect = torch.tensor(fill).view(1, 3, 1, 1).expand_as(crop)
    assert torch.allclose(crop, expect, atol=1e-3)


# ----------------------------------------------------------------------------------------------- NMS
@FAST
@given(images_and_boxes(max_boxes=20), st.integers(1, 4), st.floats(0.1, 0.9), st.floats(0.0, 0.5),
       st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_postprocess_properties(data, k, iou, threshold, max_dets, seed):
    _, _, boxes = data
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(len(boxes), k + 1, generator=gen) * 3, dim=1)
    dets = postprocess(boxes, probs, nms_iou=iou, score_threshold=threshold, max_detections=max_dets)
    assert len(dets) <= max_dets
    assert ((dets.labels >= 1) & (dets.labels <= k)).all()
    assert (dets.scores >= threshold).all()
    assert torch.all(dets.scores[:-1] >= dets.scores[1:]), "sorted by decreasing score"
    for box, score, label in zip(dets.boxes, dets.scores, dets.labels):  # each output is an input region's
        rows = (boxes == box).all(dim=1).nonzero().flatten()
        assert len(rows) >= 1
        assert any(torch.isclose(probs[r, label], score) for r in rows.tolist())
    for c in dets.labels.unique():  # no same-class pair above the threshold
        b = dets.boxes[dets.labels == c]
        if len(b) > 1:
            ious = box_iou(b, b).fill_diagonal_(0)
            assert (ious <= iou + 1e-6).all()


# ------------------------------------------------------------------------------------------ evaluators
@st.composite
def ground_truth_and_detections(draw):
    w, h, gt = draw(images_and_boxes(max_side=100, max_boxes=6))
    k = draw(st.integers(1, 3))
    labels = torch.tensor(draw(st.lists(st.integers(1, k), min_size=len(gt), max_size=len(gt))))
    _, _, extra = draw(images_and_boxes(max_side=100, max_boxes=6))
    n_dets = len(gt) + len(extra)
    scores = draw(st.lists(st.floats(0.01, 1.0), min_size=n_dets, max_size=n_dets, unique=True))
    det_labels = torch.cat([labels, torch.tensor(draw(st.lists(st.integers(1, k), min_size=len(extra),
                                                               max_size=len(extra))))])
    det_boxes = torch.cat([gt, extra.clamp(max=float(min(w, h)))])
    return w, h, gt, labels, k, det_boxes, torch.tensor(scores, dtype=torch.float32), det_labels


def _dets(boxes, scores, labels, order=None) -> Detections:
    order = torch.argsort(scores, descending=True) if order is None else order
    return Detections(boxes[order], scores[order], labels[order])


def _ap_values(metrics) -> list[float]:
    values = [v for v in metrics.per_class_AP.values()]
    values.append(metrics.AP if hasattr(metrics, "AP") else metrics.mAP)
    return values


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ground_truth_and_detections(), st.sampled_from(["coco", "ilsvrc"]), st.randoms(use_true_random=False))
def test_evaluators_bounds_perfect_and_permutation(case, metric, rnd):
    w, h, gt, labels, k, det_boxes, scores, det_labels = case
    dataset = _dataset(w, h, gt, labels, k, kind=metric)
    image_id = dataset.records[0].image_id

    def evaluate(dets):
        return (evaluate_coco(dataset, {image_id: dets}) if metric == "coco"
                else evaluate_ilsvrc(dataset, {image_id: dets}))

    # perfect detections (the ground truth itself, distinct scores) give AP 1 for every class with ground truth
    perfect = evaluate(_dets(gt, scores[: len(gt)], labels))
    present = {f"c{c}" for c in labels.tolist()}
    for name, ap in perfect.per_class_AP.items():
        assert ap == pytest.approx(1.0) if name in present else ap == -1.0
    # any detections: every AP in [0, 1] (or -1 for a class without ground truth)
    first = evaluate(_dets(det_boxes, scores, det_labels))
    for ap in _ap_values(first):
        assert ap == -1.0 or 0.0 <= ap <= 1.0 + 1e-9
    # the order of detections in the input does not matter (scores are distinct)
    perm = list(range(len(scores)))
    rnd.shuffle(perm)
    shuffled = evaluate(Detections(det_boxes[perm], scores[perm], det_labels[perm]))
    assert _ap_values(shuffled) == pytest.approx(_ap_values(first))


# ----------------------------------------------------------------------------------- selective search
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 40), st.integers(2, 40), st.integers(0, 2**31 - 1), st.sampled_from(["fast", "single"]),
       st.booleans())
def test_selective_search_boxes_inside_image(h, w, seed, strategy, blocky):
    from proposals.selective_search import SelectiveSearchConfig, selective_search

    rng = np.random.default_rng(seed)
    if blocky:  # a few flat regions: grouping has something to merge
        small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
        image = np.ascontiguousarray(np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w])
        image = np.pad(image, ((0, h - image.shape[0]), (0, w - image.shape[1]), (0, 0)), mode="edge")
    else:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    props = selective_search(image, SelectiveSearchConfig.for_strategy(strategy, min_size=0))
    b = props.boxes
    assert b.dtype == torch.float32 and b.ndim == 2 and b.shape[1] == 4 and len(b) >= 1
    assert torch.isfinite(b).all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert len(props.scores) == len(b) and math.isfinite(float(props.scores.sum()))
    # the whole image is always a proposal (the last merge of the hierarchy)
    assert ((b == torch.tensor([0.0, 0.0, w, h])).all(dim=1)).any()
