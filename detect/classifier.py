"""Region classifiers: GoogLeNet with K+1 outputs, ensembles of them, and the zero-shot ImageNet model.

Paper: Szegedy et al. 2014, section 8 — R-CNN with the Inception model as the region classifier, an
ensemble of 6 of them (softmax averaged; R-CNN's per-class SVMs are not used: the paper leaves softmax vs
SVM open and we take the softmax). Each region is warped by :func:`detect.crops.warp_regions` (R-CNN's
context-padded warp) and classified into K classes plus background (label 0).

- :class:`RegionClassifier`: a :class:`~backbone.googlenet.GoogLeNet` whose classifier was reset to K+1
  outputs, with its class names, preprocessing and crop settings. It is saved in the backbone's
  checkpoint format (:mod:`backbone.checkpoint`) with ``class_names = [BACKGROUND, *names]`` (the format
  wants one name per output) and extra fields ``"task": "region_classifier"``, ``"crop"`` and
  ``"category_ids"``, so one file is all ``detect run --weights`` needs.
- :class:`ZeroShotClassifier`: torchvision's ImageNet GoogLeNet, its 1000 classes summed into the 200
  ILSVRC DET classes by :mod:`detect.zeroshot` (DESIGN.md "Weights"); not in the paper.
- :class:`Ensemble`: softmax averaged over members that share one class list; crops are made once per
  crop configuration and chunk, then fed to every member.

Inference precision (:func:`autocast_dtype`): bf16 autocast on CUDA, and on CPUs that run bf16 natively
(AVX-512 BF16 or AMX: :func:`cpu_has_native_bf16`); fp32 elsewhere, since without those instructions
oneDNN emulates bf16 and it is slower than fp32 (BENCHMARKS.md "Region classification on the CPU").
``amp=False`` keeps fp32 everywhere. BatchNorm folding and channels_last are exact up to fp32 rounding
(tests/detect/test_cpu_speed.py); bf16 moved the class probabilities of a trained region classifier by
at most 0.0034 (192 crops, top-1 class unchanged) and those of a BatchNorm-calibrated random ImageNet
GoogLeNet by up to 0.11 (BENCHMARKS.md): ``amp=False`` is the way back to fp32.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from backbone.errors import InputError, short_repr
from backbone.googlenet import GoogLeNet
from backbone.weights import googlenet
from backbone.preprocess import Preprocessing
from detect.config import MAX_CROP_SIZE
from detect.crops import CropConfig, iter_normalized
from detect.zeroshot import ZeroShotMap, load_zeroshot_map

log = logging.getLogger(__name__)

TASK = "region_classifier"
#: Most bilinear samples per output pixel and axis a checkpoint may ask for (0 = adaptive).
MAX_SAMPLING_RATIO = 16
#: Name stored for output 0 in checkpoints (the checkpoint format wants one name per output).
BACKGROUND = "__background__"


class RegionClassifier(nn.Module):
    """GoogLeNet scoring warped regions as background (0) or one of K classes (1..K).

    Args:
        model: a GoogLeNet with ``num_classes == len(class_names) + 1``.
        class_names: the K foreground names; ``class_names[k - 1]`` is label ``k``.
        preprocessing: mean/std used to normalise crops (the backbone's).
        crop: how regions are warped (:class:`~detect.crops.CropConfig`).
        category_ids: the data set's id per label (COCO category id, ILSVRC wnid); default ``1..K``.
        source: where it was loaded from (for messages), or None.
    """

    def __init__(self, model: GoogLeNet, class_names: Sequence[str], *, preprocessing: Preprocessing = Preprocessing(),
                 crop: CropConfig = CropConfig(), category_ids: Sequence[int | str] | None = None,
                 source: str | os.PathLike | None = None) -> None:
        super().__init__()
        if model.num_classes != len(class_names) + 1:
            raise ValueError(f"model has {model.num_classes} outputs for {len(class_names)} classes + background")
        self.model = model
        self.class_names = [str(c) for c in class_names]
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(f"{len(self.category_ids)} category ids for {len(self.class_names)} classes")
        self.preprocessing = preprocessing
        self.crop = crop
        self.source = None if source is None else os.fspath(source)

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (the model has K+1 outputs)."""
        return len(self.class_names)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised crops ``Tensor[B, 3, S, S]`` -> logits ``Tensor[B, K+1]`` (column 0 = background)."""
        return self.model(x)

    def probs(self, x: Tensor) -> Tensor:
        """Normalised crops ``Tensor[B, 3, S, S]`` -> softmax ``Tensor[B, K+1]`` float32."""
        return torch.softmax(self.model(x).float(), dim=1)

    # -- building, saving, loading ---------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, class_names: Sequence[str], *, variant: str = "torchvision",
                      weights: str | os.PathLike | None = "imagenet", crop: CropConfig = CropConfig(),
                      category_ids: Sequence[int | str] | None = None, aux_logits: bool = True,
                      download: bool = True) -> "RegionClassifier":
        """A fresh region classifier initialised from backbone weights (R-CNN: fine-tune from ImageNet).

        Args:
            weights: ``"imagenet"`` (torchvision's file; torchvision variant), a backbone checkpoint or
                raw state dict path, or None (random initialisation).
            aux_logits: keep the auxiliary heads (used by the training loss, section 5; ignored at test).
        The classifier (and the auxiliary heads' last layers) are reset to K+1 outputs.
        """
        model = googlenet(variant=variant, weights=weights, num_classes=None if weights is not None else 1000,
                          aux_logits=aux_logits, download=download)
        model.reset_classifier(len(class_names) + 1)
        return cls(model, class_names, preprocessing=_backbone_preprocessing(weights), crop=crop,
                   category_ids=category_ids)

    def checkpoint_extra(self) -> dict[str, Any]:
        """The region-classifier fields added to the backbone checkpoint format."""
        return {"task": TASK, "crop": self.crop.to_dict(), "category_ids": list(self.category_ids)}

    def save(self, path: str | os.PathLike, *, config: dict[str, Any] | None = None) -> None:
        """Write a checkpoint (atomically) that :meth:`load` rebuilds with nothing else."""
        from backbone.checkpoint import save_checkpoint

        save_checkpoint(path, self.model, class_names=[BACKGROUND, *self.class_names],
                        preprocessing=self.preprocessing, config=dict(config or {}), extra=self.checkpoint_extra())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RegionClassifier":
        """Rebuild a region classifier from its checkpoint (CPU, evaluation mode).

        Raises:
            InputError: unreadable file, or a checkpoint that is not a region classifier (e.g. a backbone).
        """
        from backbone.checkpoint import checked_preprocessing, load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(path)
        if ckpt.get("task") != TASK:
            raise InputError(path, f"not a region-classifier checkpoint (task {ckpt.get('task')!r}); "
                                   "train one with 'detect train', or run without --weights for zero-shot")
        names = list(ckpt["class_names"])
        if not names or names[0] != BACKGROUND:
            raise InputError(path, f"region-classifier checkpoint must list {BACKGROUND!r} first")
        crop = _checked_crop(ckpt.get("crop", {}), path)
        preprocessing = checked_preprocessing(ckpt["preprocessing"], path)
        category_ids = ckpt.get("category_ids")
        if category_ids is not None and not (
                isinstance(category_ids, list) and len(category_ids) == len(names) - 1
                and all(type(c) is int or type(c) is str for c in category_ids)):
            raise InputError(path, f"checkpoint category_ids must be {len(names) - 1} integers or strings, one per "
                                   "class")
        try:
            model, _ = model_from_checkpoint(ckpt, expect_num_classes=len(names))
        except InputError as err:  # given a dict, it cannot name the file
            raise InputError(path, err.problem) from None
        return cls(model, names[1:], preprocessing=preprocessing, crop=crop,
                   category_ids=category_ids, source=path).eval()


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (x86 AVX-512 BF16, or AMX tiles).

    Without them (e.g. AVX2-only CPUs) oneDNN emulates bf16 convolutions, which is slower than fp32.
    """
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):  # torch.cpu, torch >= 2.3
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return False


def autocast_dtype(device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """The autocast dtype region classification uses on ``device``: ``torch.bfloat16`` on CUDA and on CPUs
    with native bf16 (:func:`cpu_has_native_bf16`) when ``amp``; None (fp32) otherwise."""
    device = torch.device(device)
    if amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())):
        return torch.bfloat16
    return None


def _checked_crop(d: Any, path: str | os.PathLike) -> CropConfig:
    """A checkpoint's ``crop`` settings as a :class:`CropConfig`, types and sizes checked first."""
    bounds = {"size": (1, MAX_CROP_SIZE), "padding": (0, MAX_CROP_SIZE), "sampling_ratio": (0, MAX_SAMPLING_RATIO)}
    if not isinstance(d, dict):
        raise InputError(path, f"bad crop settings in checkpoint (a {type(d).__name__}, expected a dict)")
    for key, (low, high) in bounds.items():
        if key in d and (type(d[key]) is not int or not low <= d[key] <= high):
            raise InputError(path, f"bad crop settings in checkpoint: {key} {short_repr(d[key])}, expected an "
                                   f"integer {low}..{high}")
    try:
        return CropConfig.from_dict(d)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"bad crop settings in checkpoint ({err})") from None


def _backbone_preprocessing(weights: str | os.PathLike | None) -> Preprocessing:
    """The preprocessing stored in a backbone checkpoint; ImageNet's default otherwise."""
    if weights is None or weights == "imagenet":
        return Preprocessing()
    from backbone.checkpoint import is_checkpoint, read_torch_file

    obj = read_torch_file(weights)
    if is_checkpoint(obj):
        from backbone.checkpoint import checked_preprocessing

        return checked_preprocessing(obj.get("preprocessing"), weights)
    return Preprocessing()


class ZeroShotClassifier(nn.Module):
    """ImageNet GoogLeNet scoring regions over the 200 ILSVRC DET classes (+ background) by WordNet map.

    ``probs`` returns ``Tensor[B, 201]``: column ``d`` = sum of the softmax of the ImageNet classes mapped
    to DET class ``d``, column 0 = sum over the unmapped classes (so a region is background when the
    unmapped classes together outweigh every DET class).
    """

    def __init__(self, model: GoogLeNet, zmap: ZeroShotMap, *, preprocessing: Preprocessing = Preprocessing(),
                 crop: CropConfig = CropConfig(), source: str | None = None) -> None:
        super().__init__()
        if model.num_classes != 1000:
            raise ValueError(f"zero-shot needs a 1000-class ImageNet model, got {model.num_classes} outputs")
        self.model = model
        self.zmap = zmap
        self.class_names = list(zmap.class_names)
        self.category_ids = list(zmap.wnids)
        self.preprocessing = preprocessing
        self.crop = crop
        self.source = source

    @classmethod
    def from_imagenet(cls, *, crop: CropConfig = CropConfig(), download: bool = True) -> "ZeroShotClassifier":
        """torchvision's ImageNet GoogLeNet (through torch hub's cache; offline, a clear InputError names the
        file to place) with the shipped zero-shot map."""
        model = googlenet(variant="torchvision", weights="imagenet", num_classes=1000, aux_logits=False,
                          download=download)
        return cls(model.eval(), load_zeroshot_map(), crop=crop, source="imagenet (zero-shot)")

    def forward(self, x: Tensor) -> Tensor:
        """Normalised crops ``Tensor[B, 3, S, S]`` -> ImageNet logits ``Tensor[B, 1000]``."""
        return self.model(x)

    def probs(self, x: Tensor) -> Tensor:
        """Normalised crops -> ``Tensor[B, 201]`` float32 DET probabilities (column 0 = background)."""
        return self.zmap.aggregate(torch.softmax(self.model(x).float(), dim=1))

    def classify(self, image: Tensor, boxes: Tensor, **kwargs: Any) -> Tensor:
        """Same as ``Ensemble([self]).classify``."""
        return Ensemble([self]).classify(image, boxes, **kwargs)


class Ensemble:
    """Region classifiers whose softmax outputs are averaged (section 8: an ensemble of 6).

    Members are :class:`RegionClassifier` or :class:`ZeroShotClassifier` (anything with ``class_names``,
    ``crop``, ``preprocessing``, ``source`` and ``probs``); all must share one class list.

    Raises:
        InputError: members with different class lists (naming both files).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for other in members[1:]:
            if list(other.class_names) != list(first.class_names):
                raise InputError(other.source, f"class list ({len(other.class_names)} classes) differs from that "
                                               f"of {first.source} ({len(first.class_names)} classes); an "
                                               "ensemble needs models trained on the same classes")
        self.members = [m.eval() for m in members]
        self.class_names: list[str] = list(first.class_names)
        self.category_ids: list[Any] = list(getattr(first, "category_ids", range(1, len(first.class_names) + 1)))

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | os.PathLike]) -> "Ensemble":
        """Load every region-classifier checkpoint of ``paths`` (CPU) into one ensemble."""
        return cls([RegionClassifier.load(p) for p in paths])

    def __len__(self) -> int:
        return len(self.members)

    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

    def to(self, device: str | torch.device, *, channels_last: bool = True) -> "Ensemble":
        """Move every member to ``device`` (NHWC memory format when ``channels_last``); returns self."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for m in self.members:
            m.to(device=device, memory_format=fmt)
        return self

    def classify(self, image: Tensor, boxes: Tensor, *, batch_size: int = 256, amp: bool = True,
                 channels_last: bool = True) -> Tensor:
        """Class probabilities of every box of one image, averaged over the members.

        Args:
            image: ``Tensor[3, H, W]`` uint8 RGB (0..255), any device (moved to the members' device).
            boxes: ``Tensor[P, 4]`` ``(x1, y1, x2, y2)`` absolute pixels of ``image``.
            batch_size: crops per forward pass; peak crop memory is ``batch_size * 3 * S * S`` floats.
            amp: bfloat16 autocast where it is native (:func:`autocast_dtype`: CUDA, CPUs with AVX-512
                BF16 or AMX); False: fp32 everywhere.
            channels_last: feed crops in NHWC memory format.

        A box given several times is classified once (its rows are copies).

        Returns:
            ``Tensor[P, K+1]`` float32 on the members' device; rows sum to 1; column 0 = background.
        """
        device = self.device
        image = image.to(device)
        boxes = boxes.to(device=device, dtype=torch.float32)
        out = torch.zeros((len(boxes), len(self.class_names) + 1), dtype=torch.float32, device=device)
        if len(boxes) == 0:
            return out
        unique, inverse = torch.unique(boxes, dim=0, return_inverse=True)
        if len(unique) < len(boxes):  # e.g. MultiBox boxes clipped to the same image-filling box
            return self.classify(image, unique, batch_size=batch_size, amp=amp, channels_last=channels_last)[inverse]
        groups: dict[tuple, list[nn.Module]] = {}
        for m in self.members:  # members sharing crop and preprocessing share the crops
            groups.setdefault((m.crop, m.preprocessing.mean, m.preprocessing.std), []).append(m)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        dtype = autocast_dtype(device, amp)
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16,
                                                    enabled=dtype is not None):
            for (crop, mean, std), group in groups.items():
                start = 0
                for crops in iter_normalized(image, boxes, crop=crop, mean=mean, std=std, batch_size=batch_size):
                    crops = crops.contiguous(memory_format=fmt)
                    for m in group:
                        out[start:start + len(crops)] += m.probs(crops).float()
                    start += len(crops)
        return out / len(self.members)
