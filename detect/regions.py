"""Training regions for region classifiers: labelling proposals by IoU, balanced batches, the loss.

Paper: Szegedy et al. 2014, section 8 fine-tunes GoogLeNet region classifiers the R-CNN way (Girshick et
al. 2014, section 2.3): every proposal whose IoU with a ground-truth box is >= 0.5 is a positive of that
box's class (ground-truth boxes themselves included), all others are background, and each SGD batch of
128 regions holds 32 positives and 96 background regions. The six models of the paper's ensemble differ
in "sampling methodology and the random order in which they see input images": here ``--seed`` (order,
background draw, mirroring, dropout) and :class:`RegionSamplingConfig` (background range, where
background comes from).

How a batch is made (deviation in form, not in ratio): the batch is split into equal *groups*, each read
from ONE image — with the default 128 regions and 25 % positives, 32 groups of 1 positive + 3 background
regions. A data-set item is one group: item ``i`` is positive ``i`` (each positive once per epoch, in the
training loop's seeded random order) plus background regions drawn at random from the same image (or from
any image, ``background_from="any"``). Batches are therefore exactly 25 % positive, like R-CNN's, and a
batch decodes 32 images instead of up to 128. Crops are made by :func:`detect.crops.warp_regions`, the
same function the detector uses, and are randomly mirrored (R-CNN's fine-tuning does the same).

Ground truth marked ``ignore`` (COCO crowd, VOC difficult) is never a positive, and proposals overlapping
it by >= ``fg_iou`` are left out rather than taught as background.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou, clip_boxes_to_image, remove_small_boxes

from backbone.googlenet import googlenet_loss
from backbone.images import read_image
from detect.config import RegionSamplingConfig  # noqa: F401  (re-exported; defined torch-free)
from detect.crops import CropConfig, image_to_tensor, normalize, warp_regions

log = logging.getLogger(__name__)

#: label of a region that is neither positive nor background (left out of training)
UNUSED = -1


@dataclass(frozen=True)
class LabeledRegions:
    """Regions of one image with their training labels.

    Attributes:
        boxes: ``Tensor[R, 4]`` float32 ``(x1, y1, x2, y2)`` absolute pixels, no ``+1``.
        labels: ``Tensor[R]`` int64: ``1..K`` positive, 0 background, :data:`UNUSED` (-1) left out.
        max_iou: ``Tensor[R]`` float32, IoU with the best-matching (non-ignored) ground-truth box.
    """

    boxes: Tensor
    labels: Tensor
    max_iou: Tensor


def label_regions(proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_ignore: Tensor | None = None, *,
                  config: RegionSamplingConfig = RegionSamplingConfig(),
                  image_size: tuple[int, int] | None = None) -> LabeledRegions:
    """Label proposals (and ground truth) of one image R-CNN's way.

    Args:
        proposals: ``Tensor[P, 4]`` xyxy absolute pixels.
        gt_boxes: ``Tensor[G, 4]`` xyxy; gt_labels: ``Tensor[G]`` in ``1..K``; gt_ignore: ``Tensor[G]`` bool.
        image_size: ``(height, width)``: clip proposals to the image first.
    Returns:
        :class:`LabeledRegions`; with ``include_gt`` the non-ignored ground-truth boxes come first.
    """
    proposals = proposals.to(torch.float32).reshape(-1, 4)
    if image_size is not None:
        proposals = clip_boxes_to_image(proposals, image_size)
    proposals = proposals[remove_small_boxes(proposals, config.min_size)]
    gt_boxes = gt_boxes.to(torch.float32).reshape(-1, 4)
    ignore = torch.zeros(len(gt_boxes), dtype=torch.bool) if gt_ignore is None else gt_ignore.to(torch.bool)
    keep_gt, ign_gt = gt_boxes[~ignore], gt_boxes[ignore]
    keep_labels = gt_labels[~ignore].to(torch.int64)
    boxes = torch.cat([keep_gt, proposals]) if config.include_gt else proposals
    if len(boxes) == 0:
        return LabeledRegions(boxes, torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    if len(keep_gt):
        iou = box_iou(boxes, keep_gt)  # R x G
        max_iou, best = iou.max(dim=1)
        labels = torch.where(max_iou >= config.fg_iou, keep_labels[best], torch.zeros_like(best))
    else:
        max_iou = torch.zeros(len(boxes))
        labels = torch.zeros(len(boxes), dtype=torch.int64)
    is_bg = labels == 0
    labels[is_bg & ((max_iou < config.bg_iou_low) | (max_iou >= config.bg_iou_high))] = UNUSED
    if len(ign_gt):
        near_ignored = box_iou(boxes, ign_gt).max(dim=1).values >= config.fg_iou
        labels[near_ignored & (labels == 0)] = UNUSED
    return LabeledRegions(boxes, labels, max_iou)


def batch_groups(batch_size: int, positives_fraction: float) -> tuple[int, int, int]:
    """Split a batch into equal groups of the same composition.

    Returns:
        ``(groups per batch, positives per group, background per group)``; e.g. 128 at 0.25 -> (32, 1, 3).
    """
    n_pos = round(batch_size * positives_fraction)
    if not 0 < n_pos < batch_size:
        raise ValueError(f"a batch of {batch_size} at {positives_fraction:.0%} positives has {n_pos} positives")
    groups = math.gcd(batch_size, n_pos)
    return groups, n_pos // groups, (batch_size - n_pos) // groups


class RegionDataset(torch.utils.data.Dataset):
    """Training regions of a detection data set; item ``i`` = one group of crops read from one image.

    Args:
        records: ``detect.datasets.ImageRecord`` list (``file``, ``width``, ``height``, ``boxes``,
            ``labels``, ``ignore``).
        proposals: one ``Tensor[P_i, 4]`` xyxy per record.
        crop: warp settings (stored in the trained checkpoint, so training and testing crop alike).
        fill: per-channel 0..255 value outside the image (the preprocessing mean x 255).
        batch_size: regions per SGD batch; with ``config.positives_fraction`` it fixes the group shape.
    Items:
        ``(crops Tensor[g, 3, S, S] uint8, labels Tensor[g] int64)``: positives first, then background.
        Randomness (background draw, mirroring) uses torch's global generator, which the training loop
        seeds from ``(seed, epoch, index)`` before each item.
    """

    def __init__(self, records: Sequence[Any], proposals: Sequence[Tensor], *, crop: CropConfig,
                 fill: Sequence[float], batch_size: int = 128,
                 config: RegionSamplingConfig = RegionSamplingConfig(), max_pixels: int | None = None) -> None:
        if len(records) != len(proposals):
            raise ValueError(f"{len(records)} records but {len(proposals)} proposal sets")
        self.records = list(records)
        self.crop, self.fill, self.config = crop, list(fill), config
        self.max_pixels = max_pixels
        self.groups_per_batch, self.pos_per_group, self.bg_per_group = batch_groups(batch_size,
                                                                                   config.positives_fraction)
        self.regions: list[LabeledRegions] = []
        positives, pos_image, bg_counts = [], [], []
        for i, (rec, props) in enumerate(zip(self.records, proposals)):
            lab = label_regions(props, rec.boxes, rec.labels, rec.ignore, config=config,
                                image_size=(rec.height, rec.width))
            self.regions.append(lab)
            pos = torch.nonzero(lab.labels > 0).flatten()
            positives.append(pos)
            pos_image.append(torch.full((len(pos),), i, dtype=torch.int64))
            bg_counts.append(int((lab.labels == 0).sum()))
        self.positive_region = torch.cat(positives) if positives else torch.zeros(0, dtype=torch.int64)
        self.positive_image = torch.cat(pos_image) if pos_image else torch.zeros(0, dtype=torch.int64)
        self.background = [torch.nonzero(r.labels == 0).flatten() for r in self.regions]
        self.near_background = [torch.nonzero((r.labels == 0) & (r.max_iou >= config.near_background_iou)).flatten()
                                for r in self.regions]
        self.bg_images = torch.tensor([i for i, n in enumerate(bg_counts) if n > 0], dtype=torch.int64)
        if len(self.positive_region) < self.pos_per_group or len(self.bg_images) == 0:
            raise ValueError(f"not enough training regions: {len(self.positive_region)} positives, "
                             f"{sum(bg_counts)} background")
        log.info("training regions: %d positives, %d background in %d images; groups of %d + %d",
                 len(self.positive_region), sum(bg_counts), len(self.records), self.pos_per_group, self.bg_per_group)

    def __len__(self) -> int:
        """Groups per epoch: every positive once."""
        return len(self.positive_region) // self.pos_per_group

    def stats(self) -> dict[str, int]:
        """Counts for logs and reports."""
        return {"images": len(self.records), "positives": len(self.positive_region),
                "background": sum(len(b) for b in self.background),
                "near_background": sum(len(b) for b in self.near_background), "groups": len(self)}

    def _draw_background(self, image: int) -> list[tuple[int, int]]:
        """``bg_per_group`` (image, region) pairs, uniformly at random (torch's global generator)."""
        out = []
        for _ in range(self.bg_per_group):
            img = image
            if self.config.background_from == "any" or len(self.background[img]) == 0:
                img = int(self.bg_images[torch.randint(len(self.bg_images), ()).item()])
            pool = self.background[img]
            if self.config.near_background_fraction > 0 and len(self.near_background[img]) > 0 \
                    and torch.rand(()).item() < self.config.near_background_fraction:
                pool = self.near_background[img]
            out.append((img, int(pool[torch.randint(len(pool), ()).item()])))
        return out

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        first = index * self.pos_per_group
        picks = [(int(self.positive_image[k]), int(self.positive_region[k]))
                 for k in range(first, first + self.pos_per_group)]
        picks += self._draw_background(picks[0][0])
        crops = torch.empty((len(picks), 3, self.crop.size, self.crop.size), dtype=torch.uint8)
        labels = torch.empty(len(picks), dtype=torch.int64)
        by_image: dict[int, list[int]] = {}
        for slot, (img, _) in enumerate(picks):
            by_image.setdefault(img, []).append(slot)
        for img, slots in by_image.items():
            rec = self.records[img]
            kwargs = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
            image = image_to_tensor(read_image(rec.file, **kwargs))
            regions = torch.tensor([picks[s][1] for s in slots])
            crops[slots] = warp_regions(image, self.regions[img].boxes[regions], size=self.crop.size,
                                        padding=self.crop.padding, fill=self.fill,
                                        sampling_ratio=self.crop.sampling_ratio, out_dtype=torch.uint8)
            labels[slots] = self.regions[img].labels[regions]
        if self.config.mirror:
            flip = torch.rand(len(picks)) < 0.5
            crops[flip] = crops[flip].flip(-1)
        return crops, labels


def collate_regions(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Groups -> one batch ``(crops Tensor[B, 3, S, S] uint8, labels Tensor[B] int64)``."""
    return torch.cat([c for c, _ in items]), torch.cat([lab for _, lab in items])


class TrainView(nn.Module):
    """What the training loop trains: ``forward`` gives the main and auxiliary logits (section 5) of the
    wrapped :class:`~detect.classifier.RegionClassifier`, so DistributedDataParallel sees one forward."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor):
        """Normalised crops ``Tensor[B, 3, S, S]`` -> ``TrainOutputs`` (each ``Tensor[B, K+1]``)."""
        return self.classifier.model.forward_train(x)


class RegionLoss:
    """``loss_fn(model, batch, device)`` for :func:`backbone.engine.train`: normalise the uint8 crops,
    run :class:`TrainView`, and return the paper's loss (softmax cross-entropy + 0.3 x each auxiliary
    loss) with the batch accuracy and the share of positives classified correctly."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, channels_last: bool = True) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device):
        crops, labels = batch
        x = normalize(crops.to(device, non_blocking=True), self.mean, self.std)
        x = x.contiguous(memory_format=self.memory_format)
        labels = labels.to(device, non_blocking=True)
        outputs = model(x)
        loss = googlenet_loss(outputs, labels)
        with torch.no_grad():
            pred = outputs.logits.argmax(dim=1)
            correct = (pred == labels).float()
            pos = labels > 0
            pos_acc = correct[pos].mean() if pos.any() else torch.zeros((), device=device)
        return loss, {"acc": correct.mean(), "pos_acc": pos_acc}


def jitter_proposals(record: Any, *, per_box: int = 16, background: int = 64, seed: int = 0) -> Tensor:
    """Cheap stand-in proposals around the ground truth (NOT the paper's): for quick runs and tests.

    Each ground-truth box gets ``per_box`` copies with its centre shifted by up to 30 % of its size and
    each side scaled by 0.6..1.6 (IoU spread over both sides of 0.5), plus ``background`` random boxes
    over the image. Returns ``Tensor[N, 4]`` xyxy clipped to the image.
    """
    rng = np.random.default_rng(seed)
    h, w = record.height, record.width
    boxes = record.boxes.numpy().reshape(-1, 4)
    out = []
    for x1, y1, x2, y2 in boxes:
        bw, bh = x2 - x1, y2 - y1
        cx = (x1 + x2) / 2 + rng.uniform(-0.3, 0.3, per_box) * bw
        cy = (y1 + y2) / 2 + rng.uniform(-0.3, 0.3, per_box) * bh
        sw, sh = bw * rng.uniform(0.6, 1.6, per_box), bh * rng.uniform(0.6, 1.6, per_box)
        out.append(np.stack([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2], axis=1))
    xa, xb = np.sort(rng.uniform(0, w, (2, background)), axis=0)
    ya, yb = np.sort(rng.uniform(0, h, (2, background)), axis=0)
    out.append(np.stack([xa, ya, xb, yb], axis=1))
    result = torch.from_numpy(np.concatenate(out).astype(np.float32))
    return clip_boxes_to_image(result, (h, w))
