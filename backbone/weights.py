"""Pretrained weights for :func:`backbone.googlenet.googlenet`, and the ImageNet class names.

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
from pathlib import Path
from typing import Any

import torch

from backbone.checkpoint import (MAX_CLASSES, check_checkpoint, checked_model_config, checked_preprocessing,
                                 is_checkpoint, load_state_dict_strict, read_torch_file)
from backbone.console import wants_progress
from backbone.errors import InputError
from backbone.googlenet import VARIANTS, GoogLeNet, GoogLeNetConfig
from backbone.preprocess import Preprocessing

log = logging.getLogger(__name__)

IMAGENET_FILE = "googlenet-1378be20.pth"
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"
IMAGENET_SHA256_PREFIX = "1378be20"  # torchvision names its files <name>-<first 8 hex digits of sha256>
#: torchvision's catalogue figures for IMAGENET_FILE (ILSVRC-2012 val, 1 crop 224 of 256).
IMAGENET_METRICS = {"acc@1": 69.778, "acc@5": 89.530}
OFFLINE_ENV = "GOINGDEEPER_OFFLINE"


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
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / IMAGENET_FILE
    if target.is_file():
        return target
    how = f"download {IMAGENET_URL} and place {IMAGENET_FILE} in {folder}"
    if not download or os.environ.get(OFFLINE_ENV) == "1":
        why = f"{OFFLINE_ENV}=1" if os.environ.get(OFFLINE_ENV) == "1" else "download=False"
        raise InputError(target, f"ImageNet GoogLeNet weights not found and downloads are off ({why}); {how}")
    log.info("downloading %s to %s", IMAGENET_URL, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(IMAGENET_URL, str(target), hash_prefix=IMAGENET_SHA256_PREFIX,
                                       progress=wants_progress())
    except Exception as err:  # URLError, timeouts, hash mismatch, disk full: all one message
        reason = " ".join(str(getattr(err, "reason", err)).split())[:120]
        raise InputError(target, f"ImageNet GoogLeNet weights not found and the download failed "
                                 f"({reason}); {how}") from None
    return target


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _state_variant(state: dict[str, torch.Tensor]) -> str:
    """torchvision's layout has BatchNorm after every convolution; the paper's has conv biases instead."""
    return "torchvision" if "conv1.bn.weight" in state else "paper"


def _load_trunk_state(model: GoogLeNet, state: dict[str, torch.Tensor], path: str | os.PathLike | None,
                      *, keep_classifier: bool) -> None:
    """Load ``state``; drop aux heads the model lacks, the classifiers when reset, and init missing aux heads."""
    heads = ("fc.", "aux1.fc2.", "aux2.fc2.")
    aux = ("aux1.", "aux2.")
    state = {k: v for k, v in state.items()
             if (keep_classifier or not k.startswith(heads)) and (model.aux1 is not None or not k.startswith(aux))}
    if model.aux1 is not None and not any(k.startswith(aux) for k in state):
        log.info("%s: no auxiliary heads in the weights; they are freshly initialised", path)
        model.initialize(model.aux1)
        model.initialize(model.aux2)
        state = {**state, **{k: v for k, v in model.state_dict().items() if k.startswith(aux)}}
    if not keep_classifier:
        state = {**state, **{k: v for k, v in model.state_dict().items() if k.startswith(heads)}}
    load_state_dict_strict(model, state, path)


def build_with_weights(weights: str | os.PathLike, *, variant: str | None = None, num_classes: int | None = None,
                       aux_logits: bool = True, dropout: float | None = None, transform_input: bool | None = None,
                       download: bool = True) -> GoogLeNet:
    """The work behind ``googlenet(weights=...)`` (see its docstring); the model is in training mode."""
    if variant is not None and variant not in VARIANTS:
        raise InputError(None, f"unknown GoogLeNet variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if os.fspath(weights) == "imagenet":
        if variant not in (None, "torchvision"):
            raise InputError(None, f"ImageNet weights ({IMAGENET_FILE}) exist only for the torchvision variant, "
                                   f"not {variant!r}; use variant 'torchvision' or a checkpoint of your own")
        path: str | os.PathLike = imagenet_weights_path(download=download)
        if aux_logits:
            log.info("%s: its auxiliary heads are untrained (as torchvision warns); train them before use", path)
    else:
        path = weights
    return _build(read_torch_file(path), path, variant=variant, num_classes=num_classes, aux_logits=aux_logits,
                  dropout=dropout, transform_input=transform_input)


def _build(obj: Any, path: str | os.PathLike, *, variant: str | None, num_classes: int | None, aux_logits: bool,
           dropout: float | None, transform_input: bool | None) -> GoogLeNet:
    """A model from a loaded weights file (our checkpoint or a raw state dict)."""
    if is_checkpoint(obj):
        check_checkpoint(obj, path)
        saved = checked_model_config(obj["model_config"], obj["model"], path)
        if variant is not None and saved.variant != variant:
            raise InputError(path, f"checkpoint holds the {saved.variant!r} GoogLeNet variant, not {variant!r}")
        if num_classes is not None and saved.num_classes != num_classes:
            raise InputError(path, f"checkpoint has {saved.num_classes} classes, not {num_classes}; "
                                   "rebuild it with model_from_checkpoint and reset_classifier to change them")
        config = GoogLeNetConfig(
            variant=saved.variant, num_classes=saved.num_classes, aux_logits=aux_logits,
            dropout=saved.dropout if dropout is None else dropout, dropout_aux=saved.dropout_aux,
            transform_input=saved.transform_input if transform_input is None else transform_input)
        model = GoogLeNet(config, init_weights=False)
        _load_trunk_state(model, obj["model"], path, keep_classifier=True)
        return model

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and _is_state_dict(obj["state_dict"]):
        obj = obj["state_dict"]  # the common {"state_dict": ...} wrapper
    if not _is_state_dict(obj):
        raise InputError(path, "neither a goingdeeper checkpoint nor a state dict of tensors")
    found = _state_variant(obj)
    if variant is not None and found != variant:
        raise InputError(path, f"state dict is in the {found!r} GoogLeNet layout, not {variant!r}")
    if "fc.weight" not in obj:
        raise InputError(path, "state dict has no classifier (fc.weight); not a GoogLeNet state dict")
    fc = obj["fc.weight"]
    if fc.ndim != 2 or not 0 < fc.shape[0] <= MAX_CLASSES:
        raise InputError(path, f"state dict's classifier fc.weight has shape {list(fc.shape)}; expected "
                               f"[classes <= {MAX_CLASSES}, features]")
    saved_classes = int(fc.shape[0])
    config = GoogLeNetConfig(variant=found, num_classes=saved_classes, aux_logits=aux_logits, dropout=dropout,
                             transform_input=transform_input)
    model = GoogLeNet(config, init_weights=False)
    _load_trunk_state(model, obj, path, keep_classifier=True)
    if num_classes is not None and num_classes != saved_classes:
        log.info("%s: trunk loaded; classifier reset from %d to %d classes", path, saved_classes, num_classes)
        model.reset_classifier(num_classes)
    return model


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
        model = _build(obj, weights, variant=variant, num_classes=None, aux_logits=False, dropout=None,
                       transform_input=None).eval()
        if is_checkpoint(obj):
            return model, list(obj["class_names"]), checked_preprocessing(obj["preprocessing"], weights)
    names = imagenet_classes() if model.num_classes == 1000 else [f"class {i}" for i in range(model.num_classes)]
    return model, names, Preprocessing()
