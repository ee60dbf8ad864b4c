"""MultiBox training: bipartite matching, the loss, and the training data.

The model, its priors and inference are in :mod:`proposals.multibox`; this module holds what only
training needs (as :mod:`detect.regions` does for :mod:`detect.classifier`). Papers: Erhan et al. 2014
("Scalable Object Detection using Deep Neural Networks"), refined in Szegedy et al. 2014 ("Scalable,
High-Quality Object Detection", arXiv 1412.1441).

* **Matching** (:func:`match`): bipartite (Hungarian, ``scipy.optimize.linear_sum_assignment``) between
  the K boxes and the G ground-truth boxes, cost = squared L2 distance of the normalised xyxy coordinates
  (Erhan et al.'s F_match). By default the *priors* are matched (as in "Scalable, High-Quality": stable
  targets early in training); ``match_on="predictions"`` matches the predicted boxes as Erhan et al. do.
* **Loss** (:func:`multibox_loss`, Erhan et al.'s ``alpha * F_match + F_conf``): ``alpha * 1/2 sum ||l_i - g_j||^2`` over matched
  pairs ``+`` logistic confidence loss summed over all K predictions (target 1 for matched, 0 otherwise),
  ``alpha = 0.3``. Deviation: the batch sum is divided by the number of matched boxes (as SSD), which
  keeps gradients at a classifier's scale; the unnormalised sum diverged at the engine's learning rate.
* **Data** (:class:`MultiBoxDataset`, :func:`collate_multibox`): each training image warped to the
  model's input square like at inference, with random horizontal mirroring; the priors
  (:func:`priors_from_records`) are the k-means centres of the training boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.utils.data import Dataset

from backbone.images import read_image
from backbone.preprocess import Preprocessing
from proposals.multibox import MultiBoxOutput, kmeans_priors, warp_to_input

# ---------------------------------------------------------------------------------- matching + loss


def match(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bipartite matching of ``K`` boxes to ``G`` ground-truth boxes (Hungarian algorithm).

    Args:
        boxes: ``Tensor[K, 4]`` normalised xyxy (priors or predictions).
        gt_boxes: ``Tensor[G, 4]`` normalised xyxy.

    Returns:
        ``(box_index, gt_index)``: two ``LongTensor[min(K, G)]`` such that ``boxes[box_index[m]]`` is
        assigned to ``gt_boxes[gt_index[m]]``, minimising the summed squared L2 distance; each box and each
        ground truth is used at most once.
    """
    if boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    cost = torch.cdist(boxes.detach().double().cpu(), gt_boxes.detach().double().cpu()).pow(2)
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def multibox_loss(output: MultiBoxOutput, gt_boxes: Sequence[torch.Tensor], priors: torch.Tensor, *,
                  alpha: float = 0.3, match_on: str = "priors") -> tuple[torch.Tensor, dict[str, float]]:
    """Erhan et al.'s ``alpha * F_match + F_conf``, summed over the batch and divided by the number
    of matched boxes in it.

    ``F_match = 1/2 sum ||l_i - g_j||^2`` over matched pairs; ``F_conf`` = logistic loss summed over all
    ``K`` predictions (target 1 for matched, 0 otherwise). Erhan et al. leave the sum unnormalised; we
    divide by the matched count (as SSD, Liu et al. 2016) because the sum over ``K`` = 800 sigmoid outputs
    otherwise gives the trunk gradients ~K/G times those of a softmax classifier and diverged at the
    engine's learning rate in our runs. For a fixed number of boxes per image the minimiser is the same.

    Args:
        output: network output for ``N`` images (``boxes Tensor[N, K, 4]``, ``logits Tensor[N, K]``).
        gt_boxes: ``N`` tensors ``Tensor[G_i, 4]``, normalised xyxy (``G_i`` may be 0: all negatives).
        priors: ``Tensor[K, 4]`` normalised xyxy (used when ``match_on == "priors"``).
        alpha: weight of the location term.
        match_on: ``"priors"`` or ``"predictions"``.

    Returns:
        ``(loss, metrics)``: scalar loss with gradients; metrics ``loc`` and ``conf`` (the two terms, per
        matched box) and ``matched`` (mean matched boxes per image).
    """
    output = MultiBoxOutput(boxes=output.boxes.float(), logits=output.logits.float())  # autocast-safe
    n = output.boxes.shape[0]
    if len(gt_boxes) != n:
        raise ValueError(f"{n} outputs but {len(gt_boxes)} ground-truth lists")
    targets = torch.zeros_like(output.logits)
    loc = output.boxes.new_zeros(())
    matched = 0
    for i, gt in enumerate(gt_boxes):
        gt = gt.to(output.boxes.device, torch.float32)
        basis = priors if match_on == "priors" else output.boxes[i]
        bi, gi = match(basis, gt)
        bi, gi = bi.to(gt.device), gi.to(gt.device)
        matched += bi.numel()
        targets[i, bi] = 1.0
        loc = loc + 0.5 * (output.boxes[i, bi] - gt[gi]).pow(2).sum()
    norm = max(matched, 1)
    loc = loc / norm
    conf = F.binary_cross_entropy_with_logits(output.logits, targets, reduction="sum") / norm
    loss = alpha * loc + conf
    return loss, {"loc": float(loc.detach()), "conf": float(conf.detach()), "matched": matched / max(n, 1)}


@dataclass(frozen=True)
class MultiBoxLoss:
    """The engine's ``loss_fn(model, batch, device) -> (loss, metrics)`` for MultiBox (picklable)."""

    alpha: float = 0.3
    match_on: str = "priors"

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, list[torch.Tensor]],
                 device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, gt_boxes = batch
        output = model(images.to(device, non_blocking=True))
        priors = getattr(model, "module", model).priors  # DistributedDataParallel wraps the model
        return multibox_loss(output, [g.to(device) for g in gt_boxes], priors, alpha=self.alpha,
                             match_on=self.match_on)


# ------------------------------------------------------------------------------------- training data


def normalised_boxes(record: Any) -> torch.Tensor:
    """A dataset record's non-ignored boxes as ``Tensor[G, 4]`` xyxy divided by (width, height)."""
    boxes = record.boxes[~record.ignore.bool()].float()
    scale = torch.tensor([record.width, record.height, record.width, record.height], dtype=torch.float32)
    return (boxes / scale).clamp(0, 1)


def priors_from_records(records: Sequence[Any], k: int, *, seed: int = 0) -> torch.Tensor:
    """k-means priors (:func:`kmeans_priors`) of all non-ignored training boxes of ``records``.

    Raises ValueError when there is no such box.
    """
    boxes = [normalised_boxes(r) for r in records]
    boxes = [b for b in boxes if b.shape[0]]
    if not boxes:
        raise ValueError("the training set has no boxes to compute MultiBox priors from")
    return kmeans_priors(torch.cat(boxes), k, seed=seed)


class MultiBoxDataset(Dataset):
    """Detection records -> ``(image Tensor[3, S, S] normalised, boxes Tensor[G, 4] normalised xyxy)``.

    Ignored boxes (COCO crowd, VOC difficult) are left out; an image without boxes teaches "no object".
    With ``flip`` a random horizontal mirror (torch's generator, which the engine seeds per item).
    """

    def __init__(self, records: Sequence[Any], *, input_size: int, preprocessing: Preprocessing,
                 flip: bool = True) -> None:
        self.records = list(records)
        self.input_size = input_size
        self.preprocessing = preprocessing
        self.flip = flip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[index]
        image = warp_to_input(read_image(record.file), self.input_size)  # 3 x S x S in [0, 1]
        boxes = normalised_boxes(record)  # G x 4
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
        return self.preprocessing.normalize(image), boxes


def collate_multibox(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Stack images (``Tensor[N, 3, S, S]``); keep ground truth as a list (``G_i`` differ)."""
    return torch.stack([image for image, _ in items]), [boxes for _, boxes in items]
