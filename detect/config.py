"""The detector's options (:class:`DetectorConfig`), torch-free so ``detect run --help`` shows its defaults
without importing torch; :mod:`detect.pipeline` (the code it configures) re-exports it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from backbone.config import MAX_PIXELS


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
