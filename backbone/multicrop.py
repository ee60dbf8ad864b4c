"""Multi-crop testing of section 7 of the paper ("ILSVRC 2014 Classification Challenge Setup and Results").

144 crops: "we resize the image to 4 scales where the shorter dimension (height or width) is 256, 288,
320 and 352 respectively, take the left, center and right square of these resized images (in the case
of portrait images, we take the top, center and bottom squares). For each square, we then take the 4
corners and the center 224x224 crop as well as the square resized to 224x224, and their mirrored
versions. This results in 4x3x6x2 = 144 crops per image." The softmax probabilities are averaged over
the crops and over the models of an ensemble.

10 crops: the shorter side resized to ``resize`` (256), the 4 corner and the centre ``crop`` x ``crop``
patches of the whole resized image, and their mirrors (AlexNet's scheme, torchvision's ``ten_crop``).
1 crop: the centre crop of :func:`backbone.preprocess.preprocess`, so that 1-crop results equal it exactly.

For a model trained at another input size ``c`` (e.g. 64), the four scales become ``c * k / 224`` for
``k`` in 256, 288, 320, 352. Resizing is torchvision's antialiased resize with the checkpoint's
interpolation, as in ``preprocess``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF  # the same resize as backbone.preprocess
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from backbone.config import CROP_SCHEMES
from backbone.console import wants_progress
from backbone.errors import InputError
from backbone.images import MAX_PIXELS, image_to_tensor, read_image
from backbone.preprocess import MAX_ASPECT, INTERPOLATIONS, Preprocessing

log = logging.getLogger(__name__)

SCHEMES = CROP_SCHEMES
PAPER_SCALES = (256, 288, 320, 352)  # section 7, for 224 x 224 crops


def scales_for(crop: int) -> tuple[int, ...]:
    """Section 7's four shorter-side lengths for a network input of ``crop`` pixels (256..352 at 224)."""
    return tuple(int(round(crop * s / 224)) for s in PAPER_SCALES)


def _resize_short(x: Tensor, size: int, interpolation: str) -> Tensor:
    return TF.resize(x, [size], interpolation=INTERPOLATIONS[interpolation], antialias=True)


def _squares(x: Tensor) -> list[Tensor]:
    """Left/centre/right squares of a landscape ``Tensor[3, H, W]`` (top/centre/bottom for portrait)."""
    h, w = x.shape[-2:]
    s = min(h, w)
    if w >= h:
        return [x[..., :, o:o + s] for o in (0, (w - s) // 2, w - s)]
    return [x[..., o:o + s, :] for o in (0, (h - s) // 2, h - s)]


def multicrop(image: np.ndarray, crops: int, preprocessing: Preprocessing | None = None) -> Tensor:
    """The test crops of one image, not yet normalised.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB.
        crops: 1, 10 or 144 (see the module docstring).
        preprocessing: ``crop`` (network input), ``resize`` (1 and 10 crops) and ``interpolation``.
    Returns:
        ``Tensor[crops, 3, crop, crop]`` uint8. Order for 144: scale, square, (4 corners + centre + whole
        square) then their 6 mirrors.
    """
    p = preprocessing or Preprocessing()
    if crops not in SCHEMES:
        raise ValueError(f"crops must be one of {SCHEMES}, got {crops}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    x = image_to_tensor(image)
    # 3 x H x W uint8
    c = p.crop
    if max(x.shape[-2:]) > MAX_ASPECT * min(x.shape[-2:]):
        return _multicrop_elongated(x, crops, p)
    if crops == 1:
        return TF.center_crop(_resize_short(x, p.resize, p.interpolation), [c, c]).unsqueeze(0)
    if crops == 10:
        return torch.stack(TF.ten_crop(_resize_short(x, p.resize, p.interpolation), [c, c]))
    out: list[Tensor] = []
    for scale in scales_for(c):
        resized = _resize_short(x, scale, p.interpolation)
        # 3 x scale x (W * scale / H) for a landscape image
        for square in _squares(resized):
            # 3 x scale x scale
            six = list(TF.five_crop(square, [c, c]))
            six.append(TF.resize(square, [c, c], interpolation=INTERPOLATIONS[p.interpolation], antialias=True))
            out.extend(six)
            out.extend(t.flip(-1) for t in six)
    return torch.stack(out)
    # 144 x 3 x c x c


def _multicrop_elongated(x: Tensor, crops: int, p: Preprocessing) -> Tensor:
    """:func:`multicrop` of an image longer than ``MAX_ASPECT`` times its width (e.g. 1 x 5000 px) without
    resizing all of it: resized whole, such an image becomes a 352 x 1,760,000 strip (20 GB at 144 crops).
    144 crops: each left/centre/right square is cut from the original and then resized (the same pixels, up
    to rounding at its border); 1 and 10 crops: the long side is first cut to its central ``MAX_ASPECT``
    shorter sides, which holds the 1-crop window whole (10 crops: the corners then come from that part)."""
    c = p.crop
    if crops in (1, 10):
        short, (h, w) = min(x.shape[-2:]), x.shape[-2:]
        keep = MAX_ASPECT * short
        x = x[:, (h - keep) // 2: (h - keep) // 2 + keep, :] if h > w else x[:, :, (w - keep) // 2: (w - keep) // 2 + keep]
        resized = _resize_short(x, p.resize, p.interpolation)
        return (TF.center_crop(resized, [c, c]).unsqueeze(0) if crops == 1 else torch.stack(TF.ten_crop(resized, [c, c])))
    out: list[Tensor] = []
    squares = _squares(x)  # 3 x short x short each, from the original pixels
    for scale in scales_for(c):
        for original in squares:
            square = TF.resize(original, [scale, scale], interpolation=INTERPOLATIONS[p.interpolation], antialias=True)
            six = list(TF.five_crop(square, [c, c]))
            six.append(TF.resize(square, [c, c], interpolation=INTERPOLATIONS[p.interpolation], antialias=True))
            out.extend(six)
            out.extend(t.flip(-1) for t in six)
    return torch.stack(out)


class MultiCropDataset(Dataset):
    """``(path, label)`` samples -> ``([Tensor[crops, 3, c, c] uint8 per preprocessing], label)``.

    One crop set per distinct preprocessing, so an ensemble of models with different input sizes works.
    """

    def __init__(self, samples: Sequence[tuple[str | os.PathLike, int]], crops: int,
                 preprocessings: Sequence[Preprocessing], *, max_pixels: int = MAX_PIXELS) -> None:
        self.samples, self.crops, self.max_pixels = list(samples), crops, max_pixels
        self.preprocessings = list(preprocessings)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[list[Tensor], int]:
        path, label = self.samples[index]
        image = read_image(path, max_pixels=self.max_pixels)
        return [multicrop(image, self.crops, p) for p in self.preprocessings], label


class _Unreadable(NamedTuple):
    """An InputError from a loader worker, carried back intact (DataLoader cannot re-raise it as itself)."""

    path: str | None
    problem: str


class _CatchErrors(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> object:
        try:
            return self.dataset[index]
        except InputError as err:
            return _Unreadable(err.path, err.problem)


@dataclass(frozen=True)
class MultiCropResult:
    """Accuracy of an ensemble with a crop scheme. Accuracies are fractions in [0, 1]."""

    crops: int
    models: int
    images: int
    top1: float
    top5: float

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5

    def to_dict(self) -> dict[str, float | int]:
        return {"crops": self.crops, "models": self.models, "images": self.images, "top1": self.top1,
                "top5": self.top5, "top1_error": self.top1_error, "top5_error": self.top5_error}


@torch.inference_mode()
def ensemble_probabilities(models: Sequence[nn.Module], crops: Sequence[Tensor], preprocessings: Sequence[Preprocessing],
                           *, device: torch.device, chunk: int = 256, amp: bool = True) -> Tensor:
    """Mean softmax over crops and models.

    Args:
        models: classifiers with the same classes, each returning logits ``Tensor[M, K]``.
        crops: per model, ``Tensor[N, C, 3, c, c]`` uint8 (``N`` images, ``C`` crops each).
        preprocessings: per model, its normalisation.
        chunk: crops per forward pass (memory bound).
    Returns:
        ``Tensor[N, K]`` float32 on the CPU; each row sums to 1.
    """
    total: Tensor | None = None
    for model, x, p in zip(models, crops, preprocessings):
        n, c = x.shape[:2]
        flat = x.flatten(0, 1)
        probs = []
        for start in range(0, flat.shape[0], chunk):
            batch = p.normalize(flat[start:start + chunk].to(device, non_blocking=True).float() / 255.0)
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                logits = model(batch)
            probs.append(torch.softmax(logits.float(), dim=1))
        mean = torch.cat(probs).view(n, c, -1).mean(dim=1).cpu()
        total = mean if total is None else total + mean
    assert total is not None
    return total / len(models)


def evaluate_multicrop(models: Sequence[nn.Module], preprocessings: Sequence[Preprocessing],
                       samples: Sequence[tuple[str | os.PathLike, int]], *, crops: int = 1, batch_size: int = 256,
                       workers: int = 4, device: torch.device | str = "cpu", amp: bool = True) -> MultiCropResult:
    """Top-1 / top-5 accuracy of an ensemble on labelled images with section 7's crop schemes.

    Args:
        models: in eval mode, same classes (label ``i`` = output ``i``); moved to ``device``.
        preprocessings: one per model (its crop size, resize, mean and std).
        samples: ``(image path, label)`` pairs.
        batch_size: network inputs (crops) per forward pass; images are loaded ``batch_size // crops`` at a time.
    """
    if crops not in SCHEMES:
        raise ValueError(f"crops must be one of {SCHEMES}, got {crops}")
    device = torch.device(device)
    distinct = list(dict.fromkeys(preprocessings))
    which = [distinct.index(p) for p in preprocessings]
    models = [m.to(device, memory_format=torch.channels_last).eval() for m in models]
    loader = DataLoader(_CatchErrors(MultiCropDataset(samples, crops, distinct)), batch_size=max(1, batch_size // crops),
                        num_workers=workers, collate_fn=_collate)
    k = None
    correct1 = correct5 = seen = 0
    for batch in tqdm(loader, desc=f"{crops}-crop eval", unit="batch", disable=not wants_progress()):
        if isinstance(batch, _Unreadable):
            raise InputError(batch.path, batch.problem)
        crop_sets, labels = batch
        probs = ensemble_probabilities(models, [crop_sets[i] for i in which], preprocessings, device=device,
                                       chunk=batch_size, amp=amp)
        k = min(5, probs.shape[1])
        top = probs.topk(k, dim=1).indices
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(dim=1).sum())
        seen += len(labels)
    if k is not None and k < 5:
        log.warning("only %d classes: top-5 counts the top %d", k, k)
    top1 = correct1 / seen if seen else float("nan")
    top5 = correct5 / seen if seen else float("nan")
    return MultiCropResult(crops=crops, models=len(models), images=seen, top1=top1, top5=top5)


def _collate(items: list) -> tuple[list[Tensor], Tensor] | _Unreadable:
    for item in items:
        if isinstance(item, _Unreadable):
            return item
    sets = [torch.stack([item[0][i] for item in items]) for i in range(len(items[0][0]))]
    return sets, torch.tensor([item[1] for item in items], dtype=torch.int64)
