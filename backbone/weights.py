"""The GoogLeNet builder :func:`googlenet` (random or pretrained weights), and the ImageNet class names.

``weights="imagenet"`` is torchvision's ImageNet GoogLeNet (``googlenet-1378be20.pth``, weights ported
from the paper's model: acc@1 69.78, acc@5 89.53 on ILSVRC-2012 val with 1 crop). It fits only the
``torchvision`` variant. The file is taken from torch hub's cache, ``torch.hub.get_dir()/checkpoints/``
(``$TORCH_HOME/hub/checkpoints``), as torchvision itself does; when it is missing it is downloaded
unless ``download=False`` or the environment sets ``GOINGDEEPER_OFFLINE=1`` — then, as when the
download fails, one InputError line names the file and the folder to place it in.

Any local path works too: one of our checkpoints (:mod:`backbone.checkpoint`) or a raw state dict
in torchvision's layout (paper or torchvision variant; told apart by its BatchNorm keys).
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from backbone.checkpoint import checked_preprocessing, is_checkpoint, model_from_file, read_torch_file
from backbone.console import wants_progress
from backbone.errors import InputError
from backbone.config import VARIANTS
from backbone.googlenet import GoogLeNet, GoogLeNetConfig
from backbone.preprocess import Preprocessing

log = logging.getLogger(__name__)

OFFLINE_ENV = "GOINGDEEPER_OFFLINE"


@dataclass(frozen=True)
class PretrainedWeights:
    """Everything known about one published weights file, in one place (as torchvision's weights enums)."""

    file: str  # torchvision names its files <name>-<first 8 hex digits of sha256>
    sha256_prefix: str  # checked by torch.hub when downloading
    variant: str  # the GoogLeNet variant the file fits
    preprocessing: Preprocessing  # how its inputs were prepared
    acc1: float  # catalogue top-1 accuracy (%), ILSVRC-2012 val, 1 crop 224 of 256
    acc5: float  # catalogue top-5 accuracy (%), same protocol

    @property
    def url(self) -> str:
        return f"https://download.pytorch.org/models/{self.file}"

    @property
    def categories(self) -> list[str]:
        """The class names in output order (:func:`imagenet_classes`)."""
        return imagenet_classes()


#: torchvision's ImageNet GoogLeNet (``weights="imagenet"``), with torchvision's catalogue figures.
IMAGENET1K_V1 = PretrainedWeights(file="googlenet-1378be20.pth", sha256_prefix="1378be20", variant="torchvision",
                                  preprocessing=Preprocessing(), acc1=69.778, acc5=89.530)
IMAGENET_FILE = IMAGENET1K_V1.file  # the name tests and messages quote


@functools.lru_cache(maxsize=1)
def _imagenet_table() -> tuple[tuple[str, str], ...]:
    text = importlib.resources.files("backbone").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    return tuple((r["wnid"], r["name"]) for r in rows)


def imagenet_classes() -> list[str]:
    """The 1000 ILSVRC-2012 class names in output order, short form (first WordNet lemma, e.g. "tench";
    the two repeated names, "crane" and "maillot", carry their wnid). From ``backbone/data``."""
    return [name for _, name in _imagenet_table()]


def imagenet_wnids() -> list[str]:
    """The 1000 ILSVRC-2012 WordNet ids (``"n01440764"``, ...) in output order."""
    return [wnid for wnid, _ in _imagenet_table()]


def imagenet_weights_path(*, download: bool = True) -> Path:
    """Path of torchvision's ImageNet GoogLeNet file in torch hub's cache; download it if allowed.

    Raises:
        InputError: the file is missing and downloading is off (``download=False`` or
            ``GOINGDEEPER_OFFLINE=1``) or fails; the line names the file and the folder to put it in.
    """
    w = IMAGENET1K_V1
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / w.file
    if target.is_file():
        return target
    how = f"download {w.url} and place {w.file} in {folder}"
    if not download or os.environ.get(OFFLINE_ENV) == "1":
        why = f"{OFFLINE_ENV}=1" if os.environ.get(OFFLINE_ENV) == "1" else "download=False"
        raise InputError(target, f"ImageNet GoogLeNet weights not found and downloads are off ({why}); {how}")
    log.info("downloading %s to %s", w.url, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(w.url, str(target), hash_prefix=w.sha256_prefix, progress=wants_progress())
    except Exception as err:  # URLError, timeouts, hash mismatch, disk full: all one message
        reason = " ".join(str(getattr(err, "reason", err)).split())[:120]
        raise InputError(target, f"ImageNet GoogLeNet weights not found and the download failed "
                                 f"({reason}); {how}") from None
    return target


def googlenet(*, variant: str | None = None, weights: str | os.PathLike | None = None, num_classes: int | None = None,
              aux_logits: bool = True, dropout: float | None = None, transform_input: bool | None = None,
              download: bool = True) -> GoogLeNet:
    """Build a GoogLeNet (torchvision's ``models.googlenet`` builder): random, or with weights.

    Args:
        variant: ``"paper"`` (Table 1) or ``"torchvision"`` (loads torchvision's state dicts). None: the
            weights' variant (torchvision for ``"imagenet"``), ``"paper"`` without weights. A variant that
            does not fit the weights is refused (InputError).
        weights: None (random initialisation); ``"imagenet"`` (torchvision's ImageNet file
            ``googlenet-1378be20.pth`` through torch hub's cache, torchvision variant only); or a path to
            one of our checkpoints or to a raw torchvision-layout state dict.
        num_classes: classifier outputs. None: the weights' class count (1000 without weights). With
            ImageNet weights or a raw state dict and a different count, the trunk is loaded and the
            classifier reset; a checkpoint of ours with a different count is refused (InputError) —
            use :func:`backbone.checkpoint.model_from_checkpoint` then :meth:`GoogLeNet.reset_classifier`.
        aux_logits: build the auxiliary heads (training only; their weights are dropped when absent).
        dropout: classifier dropout; None: 0.4 paper, 0.2 torchvision.
        transform_input: None: True for torchvision (as its ImageNet weights need), False for paper.
        download: for ``"imagenet"``, fetch the file when missing, unless ``GOINGDEEPER_OFFLINE=1``.

    Raises:
        InputError: one line, for weights that are missing, unreadable or do not fit the variant.
    """
    if weights is None:
        config = GoogLeNetConfig(variant=variant or "paper", num_classes=1000 if num_classes is None else num_classes,
                                 aux_logits=aux_logits, dropout=dropout, transform_input=transform_input)
        return GoogLeNet(config)
    return build_with_weights(weights, variant=variant, num_classes=num_classes, aux_logits=aux_logits,
                              dropout=dropout, transform_input=transform_input, download=download)


def build_with_weights(weights: str | os.PathLike, *, variant: str | None = None, num_classes: int | None = None,
                       aux_logits: bool = True, dropout: float | None = None, transform_input: bool | None = None,
                       download: bool = True) -> GoogLeNet:
    """The work behind ``googlenet(weights=...)`` (see its docstring); the model is in training mode."""
    if variant is not None and variant not in VARIANTS:
        raise InputError(None, f"unknown GoogLeNet variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if os.fspath(weights) == "imagenet":
        if variant not in (None, IMAGENET1K_V1.variant):
            raise InputError(None, f"ImageNet weights ({IMAGENET1K_V1.file}) exist only for the "
                                   f"{IMAGENET1K_V1.variant} variant, not {variant!r}; use variant "
                                   f"'{IMAGENET1K_V1.variant}' or a checkpoint of your own")
        path: str | os.PathLike = imagenet_weights_path(download=download)
        if aux_logits:
            log.info("%s: its auxiliary heads are untrained (as torchvision warns); train them before use", path)
    else:
        path = weights
    return model_from_file(read_torch_file(path), path, variant=variant, num_classes=num_classes,
                           aux_logits=aux_logits, dropout=dropout, transform_input=transform_input)


def load_classifier(weights: str | os.PathLike = "imagenet", *, variant: str | None = None,
                    download: bool = True) -> tuple[GoogLeNet, list[str], Preprocessing]:
    """A ready classifier for inference: ``(model in eval mode without aux heads, class names, preprocessing)``.

    ``weights``: ``"imagenet"`` (ImageNet class names, default preprocessing), one of our checkpoints
    (its own class names and preprocessing) or a raw state dict (ImageNet names when it has 1000
    classes, else ``"class <i>"``).
    """
    if variant is not None and variant not in VARIANTS:
        raise InputError(None, f"unknown GoogLeNet variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if os.fspath(weights) == "imagenet":
        model = build_with_weights(weights, variant=variant, aux_logits=False, download=download).eval()
    else:
        obj = read_torch_file(weights)
        model = model_from_file(obj, weights, variant=variant, aux_logits=False).eval()
        if is_checkpoint(obj):
            return model, list(obj["class_names"]), checked_preprocessing(obj["preprocessing"], weights)
    names = IMAGENET1K_V1.categories if model.num_classes == 1000 else [f"class {i}" for i in range(model.num_classes)]
    return model, names, IMAGENET1K_V1.preprocessing
