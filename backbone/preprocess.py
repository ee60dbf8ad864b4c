"""Test-time preprocessing of one image for the GoogLeNet classifier (section 6 of the paper, 1 crop).

Shorter side resized to 256, centre crop 224 x 224, scaled to [0, 1], normalised with the ImageNet
channel mean and standard deviation — torchvision's ``ImageClassification(crop_size=224)`` preset, so
its ImageNet GoogLeNet weights give their catalogue accuracy. The torchvision variant's
``transform_input`` then re-normalises to what those ported weights expect, as torchvision does.

The paper does not state its input normalisation (the Caffe replica subtracts a mean pixel only); the
paper variant uses the same ImageNet mean/std normalisation so that both variants share one pipeline.
A checkpoint stores its :class:`Preprocessing` (``to_dict``) and is rebuilt with it (``from_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Names accepted for ``Preprocessing.interpolation`` (the paper's training mixes all four, section 6).
INTERPOLATIONS: dict[str, InterpolationMode | None] = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
    "area": None,  # OpenCV's INTER_AREA (torchvision has no tensor implementation of it)
}


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the network's input ``Tensor[3, crop, crop]``."""

    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, RGB, on [0, 1] values
    std: tuple[float, float, float] = IMAGENET_STD
    resize: int = 256  # shorter side before cropping (section 6: the smallest of its 4 test scales)
    crop: int = 224  # network input (Table 1: 224 x 224 receptive field)
    interpolation: str = "bilinear"  # torchvision's preset; one of INTERPOLATIONS

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} not one of {sorted(INTERPOLATIONS)}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop {self.crop}, resize {self.resize}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, numbers, strings): safe for ``torch.load(weights_only=True)`` and JSON."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in d.items() if k in names})

    def normalize(self, x: Tensor) -> Tensor:
        """``Tensor[..., 3, H, W]`` float on [0, 1] -> normalised with ``mean`` and ``std``."""
        mean = x.new_tensor(self.mean).view(3, 1, 1)
        std = x.new_tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def __call__(self, image: np.ndarray) -> Tensor:
        """Same as :func:`preprocess` with this configuration."""
        return preprocess(image, self)


def preprocess(image: np.ndarray, preprocessing: Preprocessing | None = None) -> Tensor:
    """One image -> network input.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB (as :func:`backbone.images.read_image` returns).
        preprocessing: defaults to ``Preprocessing()`` (256 -> centre 224, ImageNet mean/std).
    Returns:
        ``Tensor[3, crop, crop]`` float32.
    """
    p = preprocessing or Preprocessing()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    if p.interpolation == "area":  # not available on tensors: OpenCV's area averaging, same output size
        h, w = image.shape[:2]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(p.resize * long / short)  # torchvision's rounding of the longer side
        size = (new_long, p.resize) if h <= w else (p.resize, new_long)  # cv2 wants (width, height)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    # 3 x H x W uint8
    if p.interpolation != "area":
        x = TF.resize(x, [p.resize], interpolation=INTERPOLATIONS[p.interpolation], antialias=True)
    # 3 x resize x (W * resize / H) for a landscape image
    x = TF.center_crop(x, [p.crop, p.crop])
    # 3 x crop x crop uint8
    return p.normalize(x.float() / 255.0)
