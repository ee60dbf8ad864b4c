"""Quality of region proposals: recall, (mean) average best overlap and average recall.

Definitions (Uijlings et al. 2013 section 5.1; Hosang et al. 2015 "What makes for effective detection
proposals?" for AR):

* best overlap of a ground-truth box = max IoU over the image's proposals;
* recall@t = fraction of ground-truth boxes with best overlap >= t;
* ABO = mean best overlap over all ground-truth boxes; MABO = mean over classes of the per-class ABO
  (= ABO when no labels are given);
* AR@N = recall averaged over t in 0.50, 0.55, ..., 0.95 using only each image's N top-ranked proposals
  (best overlap per ground truth, no one-to-one matching, as Hosang et al.).

Ground-truth boxes are pooled over images: every box counts once. Boxes are ``Tensor[N, 4]``
``(x1, y1, x2, y2)`` in absolute pixels, no +1; IoU is ``torchvision.ops.box_iou``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

#: IoU thresholds of AR: 0.50:0.05:0.95.
AR_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class ProposalStats:
    """Proposal quality over a set of images; NaN where there is no ground truth to measure."""

    recall_50: float  # fraction of ground truth with best IoU >= 0.5 (all proposals)
    recall_70: float  # ... >= 0.7
    abo: float  # mean over ground-truth boxes of the best IoU
    mabo: float  # mean over classes of the per-class ABO (= abo without labels)
    ar_100: float  # average recall over IoU 0.5:0.95 with the 100 top-ranked proposals per image
    ar_1000: float  # ... with the 1000 top-ranked proposals
    boxes_per_image: float  # mean number of proposals per image
    num_images: int
    num_gt: int


def best_overlaps(proposals: torch.Tensor, gt: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Best IoU of each ground-truth box with the first ``top_k`` proposals (all when None).

    Args:
        proposals: ``Tensor[P, 4]`` xyxy, sorted by rank.
        gt: ``Tensor[G, 4]`` xyxy.

    Returns:
        ``Tensor[G]`` float32 in [0, 1]; 0 where there are no proposals.
    """
    if top_k is not None:
        proposals = proposals[:top_k]
    if gt.shape[0] == 0:
        return torch.zeros(0)
    if proposals.shape[0] == 0:
        return torch.zeros(gt.shape[0])
    return box_iou(gt.float(), proposals.float()).max(dim=1).values


def proposal_recall(proposals_boxes: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                    gt_labels: Sequence[torch.Tensor] | None = None) -> ProposalStats:
    """Recall, ABO, MABO and AR of per-image proposals against ground truth.

    Args:
        proposals_boxes: per image ``Tensor[P_i, 4]`` xyxy, sorted by rank (best first).
        gt_boxes: per image ``Tensor[G_i, 4]`` xyxy.
        gt_labels: optional per image ``Tensor[G_i]`` class labels, for MABO.

    Returns:
        :class:`ProposalStats`.
    """
    if len(proposals_boxes) != len(gt_boxes):
        raise ValueError(f"{len(proposals_boxes)} proposal sets for {len(gt_boxes)} ground-truth sets")
    if gt_labels is not None and len(gt_labels) != len(gt_boxes):
        raise ValueError(f"{len(gt_labels)} label sets for {len(gt_boxes)} ground-truth sets")
    best, best_100, best_1000, labels = [], [], [], []
    for i, (props, gt) in enumerate(zip(proposals_boxes, gt_boxes)):
        if gt.shape[0] == 0:
            continue
        if props.shape[0] == 0:
            zeros = torch.zeros(gt.shape[0])
            for part in (best, best_100, best_1000):
                part.append(zeros)
        else:
            iou = box_iou(gt.float(), props.float())  # [G, P]
            best.append(iou.max(dim=1).values)
            best_100.append(iou[:, :100].max(dim=1).values)
            best_1000.append(iou[:, :1000].max(dim=1).values)
        if gt_labels is not None:
            labels.append(gt_labels[i].reshape(-1))
    n_images = len(proposals_boxes)
    per_image = sum(p.shape[0] for p in proposals_boxes) / n_images if n_images else math.nan
    if not best:
        nan = math.nan
        return ProposalStats(nan, nan, nan, nan, nan, nan, per_image, n_images, 0)
    best_t = torch.cat(best)
    abo = best_t.mean().item()
    if gt_labels is not None:
        label_t = torch.cat(labels)
        mabo = torch.stack([best_t[label_t == c].mean() for c in label_t.unique()]).mean().item()
    else:
        mabo = abo
    return ProposalStats(
        recall_50=(best_t >= 0.5).float().mean().item(),
        recall_70=(best_t >= 0.7).float().mean().item(),
        abo=abo,
        mabo=mabo,
        ar_100=average_recall(torch.cat(best_100)),
        ar_1000=average_recall(torch.cat(best_1000)),
        boxes_per_image=per_image,
        num_images=n_images,
        num_gt=int(best_t.numel()),
    )


def average_recall(best: torch.Tensor) -> float:
    """Mean over IoU thresholds 0.5:0.05:0.95 of the fraction of ``best`` overlaps (``Tensor[G]``) >= it."""
    if best.numel() == 0:
        return math.nan
    thresholds = torch.tensor(AR_THRESHOLDS)
    return (best[:, None] >= thresholds[None, :] - 1e-6).float().mean().item()
