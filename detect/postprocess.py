"""From region scores to detections: score threshold, per-class greedy NMS, top-N.

Paper: Szegedy et al. 2014, section 8 — R-CNN's test-time recipe with no bounding-box regression and no
context model; the paper does not give the NMS threshold, so we take R-CNN's per-class greedy NMS at
IoU 0.3 (``rcnn_detect.m``). Scores are the ensemble-averaged softmax probabilities of each class; a
region may yield a detection for several classes (one per class whose probability passes the threshold),
as R-CNN scores every region with every class's SVM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torchvision.ops import batched_nms

from detect.structures import Detections


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing options (written beside outputs and into run configs).

    Attributes:
        nms_iou: per-class greedy NMS IoU threshold. 0.3 = R-CNN's (``rcnn_detect.m``); the GoogLeNet
            paper does not state one.
        score_threshold: drop (region, class) pairs below this probability before NMS. 0.01 keeps
            almost every useful detection for AP (low-scoring detections barely move AP) while keeping
            NMS cheap; 0 keeps everything.
        max_detections: keep the best this many after NMS (COCO's evaluator reads 100 per image).
    """

    nms_iou: float = 0.3
    score_threshold: float = 0.01
    max_detections: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1], got {self.nms_iou}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {self.max_detections}")

    def to_dict(self) -> dict:
        return asdict(self)


def postprocess(boxes: torch.Tensor, probs: torch.Tensor, config: PostprocessConfig | None = None, *,
                nms_iou: float | None = None, score_threshold: float | None = None,
                max_detections: int | None = None) -> Detections:
    """Per-class greedy NMS of scored regions (the paper's mode: no box regression).

    Args:
        boxes: ``Tensor[P, 4]`` ``(x1, y1, x2, y2)`` absolute pixels, no ``+1``.
        probs: ``Tensor[P, K+1]`` class probabilities, column 0 = background (never reported).
        config: the options (default :class:`PostprocessConfig`); ``nms_iou``, ``score_threshold`` and
            ``max_detections``, where given, override its fields.

    Returns:
        :class:`Detections` on the CPU sorted by decreasing score: boxes ``Tensor[N, 4]`` float32,
        scores ``Tensor[N]`` float32, labels ``Tensor[N]`` int64 in ``1..K``; ``N <= max_detections``.
    """
    overrides = {k: v for k, v in (("nms_iou", nms_iou), ("score_threshold", score_threshold),
                                    ("max_detections", max_detections)) if v is not None}
    cfg = replace(config or PostprocessConfig(), **overrides)  # validates the options
    if boxes.ndim != 2 or boxes.shape[1] != 4 or probs.ndim != 2 or probs.shape[0] != boxes.shape[0]:
        raise ValueError(f"expected boxes Tensor[P, 4] and probs Tensor[P, K+1], got {tuple(boxes.shape)} "
                         f"and {tuple(probs.shape)}")
    if probs.shape[1] < 2 or len(boxes) == 0:
        return Detections.empty()
    boxes = boxes.to(torch.float32)
    fg = probs[:, 1:].to(torch.float32)
    region, cls = torch.nonzero(fg >= cfg.score_threshold, as_tuple=True)
    if len(region) == 0:
        return Detections.empty()
    cand_boxes, cand_scores, cand_labels = boxes[region], fg[region, cls], cls + 1
    keep = batched_nms(cand_boxes, cand_scores, cand_labels, cfg.nms_iou)[:cfg.max_detections]  # sorted by score
    return Detections(cand_boxes[keep].cpu(), cand_scores[keep].cpu(), cand_labels[keep].cpu().to(torch.int64))
