"""The detector's configs, torch-free so the commands' ``--help`` shows their defaults without importing torch:
:class:`DetectorConfig` (re-exported by :mod:`detect.pipeline`), :class:`CropConfig` (:mod:`detect.crops`) and
:class:`RegionSamplingConfig` (:mod:`detect.regions`), each next to its code by re-export."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from backbone.config import MAX_PIXELS

#: Largest crop side accepted, from the command line and from checkpoints: GoogLeNet's input is 224 (Table
#: 1); a batch of 256 crops at 512 px is 0.8 GB (1500 px took 7.5 GB before it was refused).
MAX_CROP_SIZE = 512


@dataclass(frozen=True)
class DetectorConfig:
    """Options of :class:`Detector`; the resolved config is written beside every output."""

    proposals: str = "paper"          # "paper" | "ss" | "multibox" (section 8: SS + 200 MultiBox)
    superpixel_scale: float = 2.0     # section 8: "superpixel size increased by 2x"
    multibox_top_k: int = 200         # section 8: 200 MultiBox proposals
    fast: bool = False                # our CPU mode: one model, single-strategy SS, capped proposals
    fast_max_proposals: int = 300     # fast mode: keep the best-ranked proposals only
    nms_iou: float = 0.3              # R-CNN's per-class NMS threshold (the paper leaves it open)
    score_threshold: float = 0.01     # drop detections below this probability (low: AP wants recall)
    max_detections: int = 100         # per image, after NMS (COCO's evaluation uses 100)
    batch_size: int = 256             # crops per forward pass
    amp: bool = True                  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16/AMX); False = fp32
    compile: bool = False             # torch.compile the classifiers (CUDA: ~2x crops/s, ~30 s start-up)
    max_pixels: int = MAX_PIXELS      # refuse larger images (see backbone.images)
    seed: int = 0                     # selective search's ranking randomness
    classes: tuple[int, ...] = ()     # labels (1..K) to keep; empty = every class (`detect run --classes`)

    def __post_init__(self) -> None:
        # `not a <= x <= b` is also true for NaN
        if self.proposals not in ("paper", "ss", "multibox"):
            raise ValueError(f"proposals must be 'paper', 'ss' or 'multibox', got {self.proposals!r}")
        for name in ("nms_iou", "score_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if not self.superpixel_scale > 0 or not math.isfinite(self.superpixel_scale):
            raise ValueError(f"--superpixel-scale must be a positive number, got {self.superpixel_scale}")
        for name in ("multibox_top_k", "fast_max_proposals", "max_detections", "batch_size", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if any(int(c) < 1 for c in self.classes):
            raise ValueError(f"class labels start at 1 (0 is background), got {list(self.classes)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CropConfig:
    """How regions are cut out for the region classifier (stored in every region-classifier checkpoint).

    Attributes:
        size: side of the square crop in pixels. 224 = GoogLeNet's input (paper Table 1).
        padding: context pixels around the box at the warped size. 16 = R-CNN's choice (R-CNN appendix A);
            the GoogLeNet paper does not state one.
        sampling_ratio: bilinear samples per output pixel and axis, as in ``roi_align``; 0 = adaptive
            (``ceil(box_side / size)``, antialiasing large boxes), 1 = plain bilinear like ``cv2.resize``.
    """

    size: int = 224
    padding: int = 16
    sampling_ratio: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_CROP_SIZE:
            raise ValueError(f"crop size {self.size} is out of range (1 to {MAX_CROP_SIZE} px; GoogLeNet's input is 224)")
        if self.size < 1 or self.padding < 0 or 2 * self.padding >= self.size:
            raise ValueError(f"invalid crop: size {self.size}, padding {self.padding} "
                             "(need size >= 1 and 0 <= 2 * padding < size)")
        if self.sampling_ratio < 0:
            raise ValueError(f"sampling_ratio must be >= 0, got {self.sampling_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "CropConfig":
        return CropConfig(**{k: d[k] for k in ("size", "padding", "sampling_ratio") if k in d})


@dataclass(frozen=True)
class RegionSamplingConfig:
    """How training regions are labelled and sampled (R-CNN section 2.3 defaults).

    Attributes:
        fg_iou: positives have IoU >= this with a ground-truth box (R-CNN: 0.5).
        bg_iou_low, bg_iou_high: background has max IoU in ``[low, high)`` (R-CNN fine-tuning: [0, 0.5));
            raising ``low`` (e.g. 0.1) trains on harder background, as Fast R-CNN did.
        positives_fraction: share of positives in a batch (R-CNN: 32 of 128 = 0.25).
        include_gt: ground-truth boxes are positives too (R-CNN: yes).
        mirror: random horizontal flip of each crop (R-CNN fine-tuning: yes).
        background_from: ``"image"`` = a group's background comes from the image of its positive (one
            image read per group), ``"any"`` = from random images of the whole set (R-CNN's window layer).
        min_size: proposals narrower or lower than this many pixels are dropped.
        near_background_fraction: share of a group's background drawn from the *near* background — regions
            whose IoU with a ground-truth box is in ``[near_background_iou, bg_iou_high)``: parts of objects,
            loose boxes, neighbours — when the image has any (0 = R-CNN's uniform draw). Uniform draws are
            mostly far from every object, so a classifier trained on them alone scores a box at IoU 0.6 with
            an object nearly as high as the tight box, and a part of one shape as another shape; without
            bounding-box regression that costs AP at IoU > 0.5 (README "Learning from scratch").
        near_background_iou: lower IoU bound of the near background.
    """

    fg_iou: float = 0.5
    bg_iou_low: float = 0.0
    bg_iou_high: float = 0.5
    positives_fraction: float = 0.25
    include_gt: bool = True
    mirror: bool = True
    background_from: str = "image"
    min_size: float = 2.0
    near_background_fraction: float = 0.0
    near_background_iou: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.bg_iou_low < self.bg_iou_high <= self.fg_iou <= 1.0:
            raise ValueError("need 0 <= bg_iou_low < bg_iou_high <= fg_iou <= 1, got "
                             f"{self.bg_iou_low}, {self.bg_iou_high}, {self.fg_iou}")
        if not 0.0 < self.positives_fraction < 1.0:
            raise ValueError(f"positives_fraction must be in (0, 1), got {self.positives_fraction}")
        if not 0.0 <= self.near_background_fraction <= 1.0:
            raise ValueError(f"near_background_fraction must be in [0, 1], got {self.near_background_fraction}")
        if not 0.0 <= self.near_background_iou < self.bg_iou_high:
            raise ValueError(f"near_background_iou must be in [0, bg_iou_high), got {self.near_background_iou}")
        if self.background_from not in ("image", "any"):
            raise ValueError(f"background_from must be 'image' or 'any', got {self.background_from!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
