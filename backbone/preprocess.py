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
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

from backbone.images import image_to_tensor

#: ImageNet's per-channel RGB mean and standard deviation on [0, 1] values (torchvision's figures): the one
#: copy in the project (``Preprocessing``'s defaults, ``GoogLeNet.transform_input``, the region crops' fill).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Names accepted for ``Preprocessing.interpolation`` (the paper's training mixes all four, section 6).
INTERPOLATIONS: dict[str, InterpolationMode] = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
    "area": InterpolationMode.BOX,  # TF.resize cannot do it on tensors: use resize() below
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
        """``Tensor[..., 3, H, W]`` float on [0, 1] -> normalised with ``mean`` and ``std`` (:func:`normalize`)."""
        return normalize(x, self.mean, self.std, value_scale=1.0)

    def __call__(self, image: np.ndarray) -> Tensor:
        """Same as :func:`preprocess` with this configuration."""
        return preprocess(image, self)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float], *, value_scale: float = 255.0) -> Tensor:
    """``(x / value_scale - mean) / std`` per channel: the network's input from images or crops.

    Args:
        x: ``Tensor[..., C, H, W]`` in the image's value range (0..255 for uint8 images, 0..1 for floats).
        mean, std: per-channel statistics in the 0..1 range (a :class:`Preprocessing`'s mean and std).
        value_scale: the image's full-scale value (255 for uint8 images, 1 for 0..1 floats).
    Returns:
        float ``Tensor[..., C, H, W]`` (float32 unless ``x`` is another floating dtype). Computed as
        ``(x - mean * value_scale) / (std * value_scale)``, so 0..255 crops need no division first.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).reshape(-1, 1, 1) * value_scale
    s = torch.as_tensor(std, dtype=dtype, device=x.device).reshape(-1, 1, 1) * value_scale
    return (x.to(dtype) - m) / s


def resize(x: Tensor, size: int | tuple[int, int], interpolation: str = "bilinear") -> Tensor:
    """Resize ``Tensor[..., C, H, W]`` (uint8 or float) with antialiasing.

    ``size``: an int sets the shorter side (the longer one is ``int(size * long / short)``, torchvision's
    rule); a pair is ``(height, width)``. ``interpolation``: a key of :data:`INTERPOLATIONS`; ``"area"``
    averages over input areas (``F.interpolate(mode="area")``), which ``TF.resize`` cannot do on tensors.
    """
    h, w = x.shape[-2:]
    if isinstance(size, int):
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        size = (size, new_long) if h <= w else (new_long, size)
    if interpolation != "area":
        return TF.resize(x, list(size), interpolation=INTERPOLATIONS[interpolation], antialias=True)
    batched = x.reshape(-1, *x.shape[-3:]).float()
    y = F.interpolate(batched, size=size, mode="area").reshape(*x.shape[:-2], *size)
    return y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.to(x.dtype)


#: Longest long/short side ratio resized as a whole. The centre crop only ever sees the middle
#: ``crop / resize`` (< 1) shorter-sides of the long axis, so cutting the rest first changes the crop by at
#: most a sub-pixel shift (rounding of its offset), but keeps a 1 x 5000 image from becoming a
#: 1,280,000 x 256 intermediate (measured: 9.3 GB peak memory and 25 s on CPU, against 0.1 s).
MAX_ASPECT = 4


def _trim_long_side(image: np.ndarray, max_aspect: int) -> np.ndarray:
    """Centre-cut the long axis of ``image`` (``[H, W, C]``) to at most ``max_aspect`` times the short side."""
    h, w = image.shape[:2]
    short = min(h, w)
    keep = max_aspect * short
    if max(h, w) <= keep:
        return image
    if h > w:
        top = (h - keep) // 2
        return image[top: top + keep]
    left = (w - keep) // 2
    return image[:, left: left + keep]


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
    image = _trim_long_side(image, MAX_ASPECT)
    x = image_to_tensor(image)
    # 3 x H x W uint8 (long side at most MAX_ASPECT x short side)
    x = resize(x, p.resize, p.interpolation)
    # 3 x resize x (W * resize / H) for a landscape image
    x = TF.center_crop(x, [p.crop, p.crop])
    # 3 x crop x crop uint8
    return p.normalize(x.float() / 255.0)
