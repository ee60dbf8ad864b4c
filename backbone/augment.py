"""Training-time image augmentation of the paper (section 6, "Training Methodology").

Section 6: "sampling of various sized patches of the image whose size is distributed evenly between 8%
and 100% of the image area with aspect ratio constrained to the interval [3/4, 4/3]"; "the photometric
distortions of Andrew Howard [8] were useful to combat overfitting to the imaging conditions"; "random
interpolation methods (bilinear, area, nearest neighbor and cubic, with equal probability) for resizing".
Horizontal mirroring is not named in section 6 but is in Howard's scheme and in every replica.

Choices the paper leaves open, and ours:

* Aspect ratio drawn log-uniformly in [3/4, 4/3] (as torchvision's ``RandomResizedCrop``); after 10 failed
  draws the crop falls back to the centred largest crop of clamped aspect ratio.
* Photometric distortion: Howard (2013) draws brightness, contrast and colour (saturation) factors from
  [0.5, 1.5] in random order; we do the same and add a small hue shift (±0.05 of the hue circle), as the
  team brief asks for hue jitter. Howard's PCA lighting noise is not included.

Randomness: every draw comes from a ``numpy.random.Generator``; when none is passed, one is seeded from
torch's global generator, which :mod:`backbone.engine` seeds per sample from (seed, epoch, index).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from backbone.images import image_to_tensor
from backbone.preprocess import Preprocessing

#: Section 6's resize methods, by the names ``Preprocessing.interpolation`` uses.
CV2_INTERPOLATIONS = {
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
    "bicubic": cv2.INTER_CUBIC,
}


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :class:`TrainTransform`; defaults are section 6's (and Howard 2013's) values."""

    size: int = 224                                  # output crop, pixels (Table 1 input)
    scale: tuple[float, float] = (0.08, 1.0)         # section 6: patch area 8%..100% of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)      # section 6: aspect ratio in [3/4, 4/3]
    interpolations: tuple[str, ...] = ("bilinear", "area", "nearest", "bicubic")  # section 6, equal odds
    brightness: float = 0.5                          # Howard 2013: factor in [1 - b, 1 + b]
    contrast: float = 0.5                            # Howard 2013
    saturation: float = 0.5                          # Howard 2013 ("color")
    hue: float = 0.05                                # ours: shift in [-h, h] of the hue circle
    hflip: float = 0.5                               # probability of a horizontal mirror

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "ratio", tuple(float(v) for v in self.ratio))
        object.__setattr__(self, "interpolations", tuple(self.interpolations))
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        unknown = [m for m in self.interpolations if m not in CV2_INTERPOLATIONS]
        if unknown or not self.interpolations:
            raise ValueError(f"interpolations must be among {sorted(CV2_INTERPOLATIONS)}, got {self.interpolations}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def sample_crop(height: int, width: int, rng: np.random.Generator, *, scale: tuple[float, float] = (0.08, 1.0),
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A random patch ``(top, left, h, w)`` in pixels: area fraction uniform in ``scale``, aspect ``w/h``
    log-uniform in ``ratio``. 10 tries, then the centred largest patch with aspect clamped to ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def photometric_distort(image: Tensor, rng: np.random.Generator, *, brightness: float, contrast: float,
                        saturation: float, hue: float) -> Tensor:
    """Howard's distortions in random order: ``Tensor[3, H, W]`` uint8 RGB -> same shape and dtype."""
    ops = []
    if brightness > 0:
        ops.append((TF.adjust_brightness, rng.uniform(max(0.0, 1 - brightness), 1 + brightness)))
    if contrast > 0:
        ops.append((TF.adjust_contrast, rng.uniform(max(0.0, 1 - contrast), 1 + contrast)))
    if saturation > 0:
        ops.append((TF.adjust_saturation, rng.uniform(max(0.0, 1 - saturation), 1 + saturation)))
    if hue > 0:
        ops.append((TF.adjust_hue, rng.uniform(-hue, hue)))
    for i in rng.permutation(len(ops)):
        fn, factor = ops[i]
        image = fn(image, float(factor))
    return image


class TrainTransform:
    """Section 6's training augmentation: ``np.ndarray[H, W, 3]`` uint8 RGB -> ``Tensor[3, size, size]``
    float32, normalised with ``preprocessing``'s mean and std.

    Order: random patch -> resize to ``size x size`` with a random OpenCV interpolation -> horizontal flip
    -> photometric distortion -> scale to [0, 1] and normalise.
    """

    def __init__(self, config: AugmentConfig | None = None, preprocessing: Preprocessing | None = None) -> None:
        self.config = config or AugmentConfig()
        self.preprocessing = preprocessing or Preprocessing()

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
        if rng is None:  # torch's generator is seeded per sample by the engine
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        c = self.config
        top, left, h, w = sample_crop(image.shape[0], image.shape[1], rng, scale=c.scale, ratio=c.ratio)
        patch = image[top:top + h, left:left + w]
        method = c.interpolations[int(rng.integers(len(c.interpolations)))]
        patch = cv2.resize(patch, (c.size, c.size), interpolation=CV2_INTERPOLATIONS[method])
        # size x size x 3 uint8
        if rng.random() < c.hflip:
            patch = patch[:, ::-1]
        x = image_to_tensor(patch)
        # 3 x size x size uint8
        x = photometric_distort(x, rng, brightness=c.brightness, contrast=c.contrast,
                                saturation=c.saturation, hue=c.hue)
        return self.preprocessing.normalize(x.float() / 255.0)

    def __repr__(self) -> str:
        return f"TrainTransform({self.config}, {self.preprocessing})"
