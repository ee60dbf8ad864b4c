"""Region crops: R-CNN's warp with context padding, the ONE crop function of training and testing.

Paper: Szegedy et al. 2014, section 8 uses R-CNN (Girshick et al. 2014) with GoogLeNet as the region
classifier and leaves the crop open; we take R-CNN's ``rcnn_im_crop`` choice (appendix A of the R-CNN
paper): dilate each box so that ``padding`` pixels of context surround it at the warped size, warp the
dilated box anisotropically (no aspect preservation) to ``size x size``, and fill whatever lies outside
the image with the mean.

Deviations from ``rcnn_im_crop.m``:

- Continuous coordinates (pixel ``i`` covers ``[i, i+1)``, no ``+1``) and no rounding of the dilated box:
  the crop is sampled at sub-pixel positions, so the part of the crop inside the image is exact rather
  than rounded to whole pixels.
- Sampling is :func:`torchvision.ops.roi_align` (``aligned=True``). With the default
  ``sampling_ratio=0`` it averages ``ceil(box_size / size)`` bilinear samples per output pixel and axis,
  i.e. it antialiases when a large box is shrunk (MATLAB's ``imresize`` in R-CNN was called with
  antialiasing off). ``sampling_ratio=1`` gives plain bilinear sampling at pixel centres, the same
  sampling as ``cv2.resize(..., INTER_LINEAR)``.

Memory: one crop is ``3 * size * size`` values (224 px float32: 602 KB), so 2,000 proposals take
1.2 GB. :func:`iter_warped` yields the crops ``batch_size`` at a time from one prepared copy of the image;
use it (as :class:`detect.classifier.Ensemble` does) whenever the proposal count is not small.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

from backbone.images import image_to_tensor  # noqa: F401  (re-exported: detect.regions and tests use it here)
from backbone.preprocess import IMAGENET_MEAN
from backbone.preprocess import normalize  # noqa: F401  (re-exported: detect.regions and tests use it here)
from detect.config import CropConfig  # noqa: F401  (re-exported; defined torch-free)

#: ImageNet mean (RGB) in the 0..255 range: the default fill, as R-CNN filled with its mean image.
IMAGENET_MEAN_255 = tuple(v * 255 for v in IMAGENET_MEAN)


def dilate_boxes(boxes: torch.Tensor, *, size: int = 224, padding: int = 16) -> torch.Tensor:
    """Boxes grown about their centres so that ``padding`` px of context surround them after warping.

    Args:
        boxes: ``Tensor[P, 4]`` ``(x1, y1, x2, y2)`` absolute pixels, no ``+1``.
    Returns:
        ``Tensor[P, 4]`` float32, each side scaled by ``size / (size - 2 * padding)`` independently in x
        and y (anisotropic, as R-CNN); may extend beyond the image.
    """
    boxes = boxes.to(torch.float32)
    scale = size / (size - 2 * padding)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0) / 2 * scale
    return torch.cat([centre - half, centre + half], dim=1)


def _fill_vector(image: torch.Tensor, fill: Sequence[float] | torch.Tensor | None) -> torch.Tensor:
    if fill is None:
        fill = IMAGENET_MEAN_255
    vec = torch.as_tensor(fill, dtype=torch.float32, device=image.device).reshape(-1)
    if vec.numel() == 1:
        vec = vec.expand(image.shape[0])
    if vec.numel() != image.shape[0]:
        raise ValueError(f"fill has {vec.numel()} values for an image of {image.shape[0]} channels")
    return vec


def _prepare(image: torch.Tensor, fill_vec: torch.Tensor) -> torch.Tensor:
    """``Tensor[1, C, H+2, W+2]`` float32: image minus fill, with a one-pixel border of zeros.

    Subtracting the fill makes "outside the image" equal to 0, which is what ``roi_align`` returns for
    samples beyond the border; the zero border makes samples within a pixel of the edge blend towards
    the fill instead of repeating the edge pixel (roi_align clamps there).
    """
    if image.ndim != 3:
        raise ValueError(f"expected an image Tensor[C, H, W], got shape {tuple(image.shape)}")
    x = image.to(torch.float32) - fill_vec[:, None, None]
    return F.pad(x, (1, 1, 1, 1))[None]


def _warp_prepared(prepared: torch.Tensor, boxes: torch.Tensor, fill_vec: torch.Tensor, crop: CropConfig,
                   out_dtype: torch.dtype, *, fill: bool = True) -> torch.Tensor:
    dilated = dilate_boxes(boxes.to(prepared.device), size=crop.size, padding=crop.padding) + 1.0  # border
    # A zero-width box would get zero adaptive samples (an all-fill crop); give it a sliver of width.
    mid = (dilated[:, :2] + dilated[:, 2:]) / 2
    half = ((dilated[:, 2:] - dilated[:, :2]) / 2).clamp(min=1e-2)
    dilated = torch.cat([mid - half, mid + half], dim=1)
    rois = torch.cat([dilated.new_zeros(len(dilated), 1), dilated], dim=1)
    out = roi_align(prepared, rois, output_size=(crop.size, crop.size), spatial_scale=1.0,
                    sampling_ratio=crop.sampling_ratio, aligned=True)
    if fill:  # iter_normalized's fill is 0: nothing to add
        out += fill_vec[None, :, None, None]
    if out_dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(out_dtype)


def warp_regions(image: torch.Tensor, boxes: torch.Tensor, *, size: int = 224, padding: int = 16,
                 fill: Sequence[float] | torch.Tensor | None = None, sampling_ratio: int = 0,
                 out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Warp every box of one image, with context padding, to a ``size x size`` crop (one batched op).

    Args:
        image: ``Tensor[C, H, W]`` uint8 or float, on any device (the crops are made there).
        boxes: ``Tensor[P, 4]`` ``(x1, y1, x2, y2)`` absolute pixels of ``image``, no ``+1``.
        size, padding, sampling_ratio: see :class:`CropConfig`.
        fill: per-channel value for the parts of a dilated box outside the image, in the image's value
            range; default the ImageNet mean in 0..255 (pass e.g. ``mean`` for a 0..1 float image).
        out_dtype: dtype of the result; values stay in the image's range (uint8 is rounded and clamped).

    Returns:
        ``Tensor[P, C, size, size]`` on ``image.device``. Memory is ``P * C * size * size`` values: for
        thousands of boxes use :func:`iter_warped`.
    """
    crop = CropConfig(size=size, padding=padding, sampling_ratio=sampling_ratio)
    fill_vec = _fill_vector(image, fill)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"expected boxes Tensor[P, 4], got shape {tuple(boxes.shape)}")
    if len(boxes) == 0:
        return torch.zeros((0, image.shape[0], size, size), dtype=out_dtype, device=image.device)
    return _warp_prepared(_prepare(image, fill_vec), boxes, fill_vec, crop, out_dtype)


def iter_warped(image: torch.Tensor, boxes: torch.Tensor, *, crop: CropConfig = CropConfig(),
                fill: Sequence[float] | torch.Tensor | None = None, batch_size: int = 256,
                out_dtype: torch.dtype = torch.float32) -> Iterator[torch.Tensor]:
    """Yield :func:`warp_regions` of ``boxes`` in order, ``batch_size`` boxes at a time.

    The image is converted and padded once; peak memory is one chunk of crops
    (``batch_size * C * size * size`` values) plus one float copy of the image.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fill_vec = _fill_vector(image, fill)
    prepared = _prepare(image, fill_vec)
    for start in range(0, len(boxes), batch_size):
        yield _warp_prepared(prepared, boxes[start:start + batch_size], fill_vec, crop, out_dtype)


def iter_normalized(image: torch.Tensor, boxes: torch.Tensor, *, crop: CropConfig = CropConfig(),
                    mean: Sequence[float], std: Sequence[float], value_scale: float = 255.0,
                    batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Yield the network's input for ``boxes``: ``normalize(crops, mean, std)`` of the crops that
    :func:`iter_warped` makes with the mean as fill (R-CNN's), ``batch_size`` boxes at a time.

    Warping is linear and the fill is the mean, so the image is normalised once (``(image - mean) / std``,
    the fill becoming 0) and warped: one pass per crop instead of a warp, a fill and two normalising
    passes. Equal to ``normalize(iter_warped(...))`` up to float32 rounding (tests/detect/test_crops.py).

    Returns float32 ``Tensor[B, C, S, S]`` chunks in order (NCHW).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if image.ndim != 3:
        raise ValueError(f"expected an image Tensor[C, H, W], got shape {tuple(image.shape)}")
    m = torch.as_tensor(mean, dtype=torch.float32, device=image.device).reshape(-1, 1, 1) * value_scale
    s = torch.as_tensor(std, dtype=torch.float32, device=image.device).reshape(-1, 1, 1) * value_scale
    prepared = F.pad((image.to(torch.float32) - m) / s, (1, 1, 1, 1))[None]
    zero = torch.zeros(image.shape[0], dtype=torch.float32, device=image.device)
    for start in range(0, len(boxes), batch_size):
        yield _warp_prepared(prepared, boxes[start:start + batch_size], zero, crop, torch.float32, fill=False)
