"""warp_regions against straightforward per-box OpenCV references on real images.

Measured (CPU, boxes below; mean absolute difference in 0..255 grey levels), see the asserts:
(worst box per image: astronaut, coffee, coco128 000000000009; 96-px crops, padding 6):
- vs ``cv2.warpAffine`` of the exact float box (float32 input), sampling_ratio=1: 0.000 / 0.000 / 0.000
  (same sampling points, same bilinear weights).
- vs "pad with mean, crop the dilated box at whole pixels, cv2.resize bilinear", sampling_ratio=1:
  2.49 / 1.97 / 2.09 (the reference rounds the box to whole pixels: up to half a pixel of shift/scale).
- same reference, default sampling_ratio=0 (adaptive averaging = antialiasing of shrunk boxes):
  5.15 / 4.67 / 6.13; vs the exact float reference 5.09 / 4.53 / 6.06, so nearly all of it is the
  aliasing of plain bilinear shrinking on textured regions, which the averaging removes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from backbone.images import read_image
from detect.crops import (IMAGENET_MEAN_255, CropConfig, dilate_boxes, image_to_tensor, iter_warped, normalize,
                          warp_regions)

SIZE, PAD = 96, 6  # small crops keep the test fast; same geometry as 224/16 up to scale


def _boxes_for(h: int, w: int) -> torch.Tensor:
    """Hand-made boxes: inside, touching every border, partly outside, tiny, large, thin."""
    return torch.tensor([
        [0.3 * w, 0.2 * h, 0.7 * w, 0.6 * h],
        [0.0, 0.0, 0.5 * w, 0.4 * h],
        [0.5 * w, 0.6 * h, w, h],
        [-20.0, 0.1 * h, 0.3 * w, 0.9 * h],
        [0.45 * w, 0.45 * h, 0.45 * w + 9.5, 0.45 * h + 7.25],
        [0.0, 0.0, float(w), float(h)],
        [0.1 * w, 0.5 * h, 0.9 * w, 0.5 * h + 12.0],
    ], dtype=torch.float32)


def _reference_affine(img: np.ndarray, box: np.ndarray, size: int, fill) -> np.ndarray:
    """Exact float box -> size x size by cv2.warpAffine (bilinear, constant border = fill)."""
    x1, y1, x2, y2 = box
    ax, ay = (x2 - x1) / size, (y2 - y1) / size
    # destination pixel centre j+0.5 <- source x1 + (j+0.5)*ax, in OpenCV's index space (-0.5)
    m = np.array([[ax, 0, x1 + 0.5 * ax - 0.5], [0, ay, y1 + 0.5 * ay - 0.5]], dtype=np.float64)
    out = cv2.warpAffine(img.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in fill))
    return out


def _reference_crop_resize(img: np.ndarray, box: np.ndarray, size: int, fill) -> np.ndarray:
    """R-CNN style: pad with the mean, crop the dilated box at whole pixels, cv2.resize bilinear."""
    m = 64
    h, w = img.shape[:2]
    padded = np.empty((h + 2 * m, w + 2 * m, 3), dtype=np.float32)
    padded[:] = np.asarray(fill, dtype=np.float32)
    padded[m:m + h, m:m + w] = img
    x1, y1, x2, y2 = (int(round(v)) + m for v in box)
    window = padded[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
    return cv2.resize(window, (size, size), interpolation=cv2.INTER_LINEAR)


def _images(coco128) -> list[np.ndarray]:
    files = sorted(coco128["images"].glob("*.jpg"))
    return [skdata.astronaut(), skdata.coffee(), read_image(files[0])]


@pytest.fixture(scope="module")
def real_images(coco128) -> list[np.ndarray]:
    return _images(coco128)


def test_dilation_gives_padding_of_context():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 70.0]])
    d = dilate_boxes(boxes, size=224, padding=16)
    # the original box must occupy exactly [16, 208) of the 224-px crop on both axes
    scale = 224 / (224 - 32)
    assert torch.allclose(d, torch.tensor([[60 - 50 * scale, 45 - 25 * scale, 60 + 50 * scale, 45 + 25 * scale]]))
    w = d[0, 2] - d[0, 0]
    assert math.isclose(float((boxes[0, 0] - d[0, 0]) / w * 224), 16.0, rel_tol=1e-5)


def test_matches_exact_float_reference(real_images):
    for img in real_images:
        h, w = img.shape[:2]
        boxes = _boxes_for(h, w)
        crops = warp_regions(image_to_tensor(img), boxes, size=SIZE, padding=PAD, sampling_ratio=1)
        dilated = dilate_boxes(boxes, size=SIZE, padding=PAD).numpy()
        for k in range(len(boxes)):
            ref = _reference_affine(img, dilated[k], SIZE, IMAGENET_MEAN_255)
            ours = crops[k].permute(1, 2, 0).numpy()
            assert np.abs(ours - ref).mean() < 0.05, (k, np.abs(ours - ref).mean())


def test_matches_crop_and_resize_reference(real_images):
    worst_bilinear, worst_adaptive = 0.0, 0.0
    for img in real_images:
        h, w = img.shape[:2]
        boxes = _boxes_for(h, w)
        t = image_to_tensor(img)
        bilinear = warp_regions(t, boxes, size=SIZE, padding=PAD, sampling_ratio=1)
        adaptive = warp_regions(t, boxes, size=SIZE, padding=PAD)  # default: antialiased
        dilated = dilate_boxes(boxes, size=SIZE, padding=PAD).numpy()
        for k in range(len(boxes)):
            ref = _reference_crop_resize(img, dilated[k], SIZE, IMAGENET_MEAN_255)
            worst_bilinear = max(worst_bilinear, np.abs(bilinear[k].permute(1, 2, 0).numpy() - ref).mean())
            worst_adaptive = max(worst_adaptive, np.abs(adaptive[k].permute(1, 2, 0).numpy() - ref).mean())
    assert worst_bilinear < 3.5, worst_bilinear
    assert worst_adaptive < 8.0, worst_adaptive


def test_outside_is_mean_and_inside_untouched():
    img = torch.full((3, 40, 60), 200, dtype=torch.uint8)
    fill = (10.0, 20.0, 30.0)
    # box far outside the image: the whole crop is fill
    out = warp_regions(img, torch.tensor([[500.0, 500.0, 600.0, 600.0]]), size=32, padding=4, fill=fill)
    assert torch.allclose(out[0], torch.tensor(fill).view(3, 1, 1).expand(3, 32, 32))
    # the whole image as box: padding ring is fill, centre is image
    out = warp_regions(img, torch.tensor([[0.0, 0.0, 60.0, 40.0]]), size=32, padding=4, fill=fill)
    assert torch.allclose(out[0, :, 6:26, 6:26], torch.full((3, 20, 20), 200.0))
    assert torch.allclose(out[0, :, 0:3, :], torch.tensor(fill).view(3, 1, 1).expand(3, 3, 32))


def test_dtypes_empty_chunks_and_normalize():
    img = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 30.0], [0.0, 0.0, 70.0, 50.0], [30.0, 10.0, 31.0, 11.0]])
    full = warp_regions(img, boxes, size=24, padding=2)
    assert full.shape == (3, 3, 24, 24) and full.dtype == torch.float32
    as_u8 = warp_regions(img, boxes, size=24, padding=2, out_dtype=torch.uint8)
    assert as_u8.dtype == torch.uint8 and (as_u8.float() - full).abs().max() <= 0.5 + 1e-4
    float_img = warp_regions(img.float() / 255, boxes, size=24, padding=2, fill=[v / 255 for v in IMAGENET_MEAN_255])
    assert torch.allclose(float_img * 255, full, atol=1e-3)
    chunks = list(iter_warped(img, boxes, crop=CropConfig(size=24, padding=2), batch_size=2))
    assert [len(c) for c in chunks] == [2, 1] and torch.equal(torch.cat(chunks), full)
    assert warp_regions(img, torch.zeros((0, 4)), size=24, padding=2).shape == (0, 3, 24, 24)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    norm = normalize(full, mean, std)
    assert torch.allclose(norm[:, 1] * 0.224 * 255 + 0.456 * 255, full[:, 1], atol=1e-3)
    with pytest.raises(ValueError):
        CropConfig(size=32, padding=16)
    assert CropConfig.from_dict(CropConfig(64, 8).to_dict()) == CropConfig(64, 8)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    img = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10.0, 90.0, 70.0], [-30.0, 50.0, 170.0, 130.0], [60.0, 20.0, 64.5, 31.0]])
    cpu = warp_regions(img, boxes, size=64, padding=8)
    gpu = warp_regions(img.cuda(), boxes.cuda(), size=64, padding=8)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-3
