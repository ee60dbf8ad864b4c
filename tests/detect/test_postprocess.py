"""postprocess on hand-made boxes: per-class NMS, thresholds, top-N, background never reported."""

from __future__ import annotations

import pytest
import torch

from detect.postprocess import PostprocessConfig, postprocess

BOXES = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],    # A
    [1.0, 0.0, 11.0, 10.0],    # A' : IoU(A, A') = 90/110 = 0.82
    [0.0, 0.0, 10.0, 20.0],    # B : IoU(A, B) = 0.5
    [50.0, 50.0, 60.0, 60.0],  # C : far away
])


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_per_class_nms_suppresses_only_within_a_class():
    probs = _probs([
        [0.1, 0.9, 0.0],
        [0.2, 0.8, 0.0],   # same class as A, overlaps 0.82 -> suppressed
        [0.0, 0.0, 1.0],   # other class: kept although it overlaps A by 0.5
        [0.6, 0.4, 0.0],   # background wins, but class-1 score 0.4 still counts (R-CNN scores every class)
    ])
    det = postprocess(BOXES, probs)
    assert det.labels.tolist() == [2, 1, 1]
    assert torch.allclose(det.scores, torch.tensor([1.0, 0.9, 0.4]))
    assert torch.equal(det.boxes, BOXES[[2, 0, 3]])


def test_nms_threshold_is_iou_strictly_above():
    probs = _probs([[0.0, 0.9], [0.0, 0.0], [0.0, 0.8], [0.0, 0.0]])
    # A vs B: IoU exactly 0.5 -> suppressed at 0.3, kept at 0.5 (NMS drops IoU > threshold)
    assert len(postprocess(BOXES, probs, nms_iou=0.3)) == 1
    assert len(postprocess(BOXES, probs, nms_iou=0.5)) == 2


def test_threshold_max_detections_and_empty():
    probs = _probs([[0.0, 0.5, 0.5], [0.0, 0.3, 0.7], [0.99, 0.005, 0.005], [0.0, 0.6, 0.4]])
    det = postprocess(BOXES, probs, score_threshold=0.01, nms_iou=1.0)
    assert len(det) == 6 and det.scores.min() >= 0.3  # the 0.005 ones are cut
    assert (det.scores[:-1] >= det.scores[1:]).all()
    top2 = postprocess(BOXES, probs, nms_iou=1.0, max_detections=2)
    assert torch.allclose(top2.scores, torch.tensor([0.7, 0.6]))
    from_config = postprocess(BOXES, probs, PostprocessConfig(nms_iou=1.0, max_detections=2))
    assert torch.equal(from_config.scores, top2.scores) and torch.equal(from_config.labels, top2.labels)
    assert len(postprocess(torch.zeros((0, 4)), torch.zeros((0, 3)))) == 0
    assert len(postprocess(BOXES, _probs([[1.0, 0.0]] * 4))) == 0
    assert postprocess(BOXES, probs).labels.dtype == torch.int64
    with pytest.raises(ValueError):
        PostprocessConfig(nms_iou=1.5)
    with pytest.raises(ValueError):
        postprocess(BOXES, probs[:2])
