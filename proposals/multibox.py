"""MultiBox: class-agnostic box proposals from a GoogLeNet trunk.

Implements the proposal network of Erhan et al. 2014 ("Scalable Object Detection using Deep Neural
Networks": training objective with bipartite matching) as used in the GoogLeNet paper (Szegedy et al.
2014, section 8: "200 region proposals coming from multi-box") and refined in Szegedy et al. 2014
("Scalable, High-Quality Object Detection", arXiv 1412.1441: priors from clustering, matching against
priors).

* **Priors**: ``K`` boxes in normalised ``[0, 1]`` xyxy coordinates, the k-means cluster centres of the
  training boxes (:func:`kmeans_priors`). They live in the model as a buffer, so every checkpoint holds
  them. The papers use about 800 priors; ``K`` is :attr:`MultiBoxConfig.num_priors`, capped by the number
  of training boxes.
* **Head** (our choice; the papers used the network's fully connected top): on the trunk's
  ``forward_features`` map (``N x 1024 x S/32 x S/32``) a 1x1 conv to ``head_channels`` + BatchNorm + ReLU,
  adaptive average pooling to a ``head_grid x head_grid`` grid (so the head keeps coarse *where* information, which
  global pooling would throw away, and does not depend on the input size), dropout, and one linear layer
  to ``K x 5`` numbers: per prior 4 offsets (normalised by the image size, added to the prior) and one
  confidence logit. The BatchNorm is there because a randomly initialised paper-variant trunk (no
  BatchNorm) gives features that differ between images by ~2% of their size: without it the head saw
  near-constant input and, on 4 coco128 images, the loss stalled at the "prior frequency only" level
  (~2.2 after 40 steps); with it the loss fell to 1.05 in 20 steps (64 px, lr 0.003).
* **Matching and loss** (Erhan et al.'s ``alpha * F_match + F_conf``, bipartite matching against the
  priors) and the training data are in :mod:`proposals.multibox_train`: what only training needs (as
  :mod:`detect.regions` for :mod:`detect.classifier`).
* **Inference** (:meth:`MultiBox.propose`): the image is warped to a fixed square ``input_size`` and
  normalised with the backbone's mean/std; boxes come back in original pixels, clipped, the ``top_k``
  (200, GoogLeNet section 8) by sigmoid confidence, as :class:`~proposals.structures.Proposals` with source
  index 1 (``"multibox"``). No NMS by default (the papers rank raw outputs; :mod:`proposals.merge`
  removes near-duplicates when combining with selective search); ``nms_iou`` turns one on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2
from torch import nn
from torchvision.ops import clip_boxes_to_image, nms

from backbone.checkpoint import checked_preprocessing, load_checkpoint, model_from_checkpoint, save_checkpoint
from backbone.errors import InputError, short_repr
from backbone.weights import googlenet
from backbone.images import image_to_tensor
from backbone.preprocess import Preprocessing
from proposals.config import MultiBoxConfig  # noqa: F401  (re-exported; defined torch-free)
from proposals.structures import SOURCES, Proposals

log = logging.getLogger(__name__)

#: Source index of MultiBox boxes in :class:`~proposals.structures.Proposals`.
MULTIBOX_SOURCE = SOURCES.index("multibox")


@dataclass(frozen=True)
class MultiBoxOutput:
    """Raw network output for a batch.

    Attributes:
        boxes: ``Tensor[N, K, 4]`` predicted boxes, ``(x1, y1, x2, y2)`` normalised to ``[0, 1]`` by the
            image width/height (prior + predicted offset; not clamped).
        logits: ``Tensor[N, K]`` confidence logits (sigmoid = probability that the box holds an object).
    """

    boxes: torch.Tensor
    logits: torch.Tensor


# ------------------------------------------------------------------------------------------- priors


def kmeans_priors(boxes: torch.Tensor, k: int, *, seed: int = 0, iterations: int = 30) -> torch.Tensor:
    """Cluster normalised training boxes into ``k`` priors.

    Args:
        boxes: ``Tensor[M, 4]`` ``(x1, y1, x2, y2)`` normalised to ``[0, 1]`` by each image's size.
        k: number of priors wanted; if there are at most ``k`` distinct boxes, those boxes are the priors.
        seed: k-means++ seeding.

    Returns:
        ``Tensor[min(k, distinct boxes), 4]`` float32 cluster centres, sorted by area (largest first) so
        the order is reproducible.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise ValueError(f"need Tensor[M>0, 4] of boxes, got {tuple(boxes.shape)}")
    data = np.unique(boxes.detach().cpu().double().numpy(), axis=0)
    if data.shape[0] <= k:
        centres = data
    else:
        centres, labels = kmeans2(data, k, iter=iterations, minit="++", seed=seed)
        used = np.unique(labels)  # drop clusters that ended empty
        if used.size < k:
            log.info("k-means: %d of %d clusters empty, keeping %d priors", k - used.size, k, used.size)
        centres = centres[used]
    centres = torch.as_tensor(centres, dtype=torch.float32).clamp(0, 1)
    area = (centres[:, 2] - centres[:, 0]) * (centres[:, 3] - centres[:, 1])
    return centres[torch.argsort(-area, stable=True)]


# ----------------------------------------------------------------------------------------- the model


def preprocessing_for(config: MultiBoxConfig, base: Preprocessing | None = None) -> Preprocessing:
    """The backbone's preprocessing (mean/std of ``base``, ImageNet's by default) at MultiBox's input size."""
    base = base or Preprocessing()
    return dataclasses.replace(base, resize=config.input_size, crop=config.input_size)


def warp_to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """Warp a whole RGB image (anisotropically) to ``size x size``, the MultiBox input.

    ``image``: ``np.ndarray[H, W, 3]`` RGB, uint8 or float in ``[0, 1]``. Returns ``Tensor[3, size, size]``
    float32 in ``[0, 1]`` (not yet normalised). Area interpolation: photos are usually shrunk a lot.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = image.astype(np.float32, copy=False)
    resized = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
    t = image_to_tensor(resized).float()  # 3 x size x size
    return t.div_(255) if image.dtype == np.uint8 else t


class MultiBoxHead(nn.Module):
    """Feature map ``N x C x h x w`` -> ``N x K x 5`` (4 offsets + 1 logit per prior)."""

    def __init__(self, in_channels: int, num_priors: int, *, channels: int, grid: int, dropout: float,
                 conf_prior: float) -> None:
        super().__init__()
        self.num_priors = num_priors
        self.reduce = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * grid * grid, num_priors * 5)
        # Start at "boxes = priors, confidence = conf_prior": small offsets, biased logits.
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)
        with torch.no_grad():
            self.fc.bias.view(num_priors, 5)[:, 4] = float(np.log(conf_prior / (1 - conf_prior)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.reduce(features)), inplace=True)  # N x channels x h x w
        x = self.pool(x)  # N x channels x grid x grid
        x = self.dropout(torch.flatten(x, 1))  # N x channels*grid*grid
        return self.fc(x).view(-1, self.num_priors, 5)  # N x K x 5


class MultiBox(nn.Module):
    """GoogLeNet trunk + MultiBox head.

    Args:
        trunk: any module with ``forward_features(x) -> Tensor[N, C, h, w]`` and ``num_features = C``
            (the backbone's GoogLeNet; tests use a tiny stand-in).
        priors: ``Tensor[K, 4]`` normalised xyxy priors (see :func:`kmeans_priors`).
        config: the rest; ``config.num_priors`` is informational, ``K`` comes from ``priors``.
        preprocessing: the backbone's :class:`~backbone.preprocess.Preprocessing`; only its ``mean`` and
            ``std`` are used (MultiBox warps the whole image to ``input_size``, it does not crop).
    """

    def __init__(self, trunk: nn.Module, priors: torch.Tensor, config: MultiBoxConfig,
                 preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        if priors.ndim != 2 or priors.shape[1] != 4 or priors.shape[0] == 0:
            raise ValueError(f"priors must be Tensor[K>0, 4], got {tuple(priors.shape)}")
        self.config = config
        self.preprocessing = preprocessing_for(config, preprocessing)
        self.trunk = trunk
        self.register_buffer("priors", priors.detach().float().clone())
        mean, std = self.preprocessing.mean, self.preprocessing.std
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.head = MultiBoxHead(int(trunk.num_features), priors.shape[0], channels=config.head_channels,
                                 grid=config.head_grid, dropout=config.dropout, conf_prior=config.conf_prior)

    @staticmethod
    def from_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> "MultiBox":
        """Same as :func:`load_multibox`."""
        return load_multibox(path, device=device)

    @property
    def num_priors(self) -> int:
        return int(self.priors.shape[0])

    def forward(self, x: torch.Tensor) -> MultiBoxOutput:
        """``x``: ``Tensor[N, 3, S, S]`` normalised images (see :meth:`preprocess`)."""
        features = self.trunk.forward_features(x)  # N x 1024 x S/32 x S/32
        out = self.head(features)  # N x K x 5
        boxes = self.priors.unsqueeze(0) + out[..., :4]  # N x K x 4, normalised xyxy
        return MultiBoxOutput(boxes=boxes, logits=out[..., 4])

    # ----------------------------------------------------------------------------------- inference

    def preprocess(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One RGB image -> ``Tensor[3, S, S]`` float32 on the model's device, warped and normalised.

        ``image``: ``np.ndarray[H, W, 3]`` uint8, or ``Tensor[3, H, W]`` (uint8, or float in ``[0, 1]``).
        """
        if isinstance(image, torch.Tensor):  # the same warp as for arrays (one resize rule for both kinds)
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a 3 x H x W RGB tensor, got shape {tuple(image.shape)}")
            image = image.detach().permute(1, 2, 0).cpu().numpy()
        t = warp_to_input(image, self.config.input_size).to(self.mean.device)
        return (t - self.mean[0]) / self.std[0]

    @torch.no_grad()
    def propose_batch(self, images: Sequence[np.ndarray | torch.Tensor], *, top_k: int | None = None,
                      nms_iou: float | None = None) -> list[Proposals]:
        """:meth:`propose` for several images in one forward pass (images may differ in size)."""
        if len(images) == 0:
            return []
        top_k = self.config.top_k if top_k is None else top_k
        sizes = [(img.shape[0], img.shape[1]) if isinstance(img, np.ndarray) else tuple(img.shape[-2:])
                 for img in images]
        was_training = self.training
        self.eval()
        try:
            out = self(torch.stack([self.preprocess(img) for img in images]))
        finally:
            self.train(was_training)
        results = []
        for i, (h, w) in enumerate(sizes):
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            boxes = out.boxes[i].float().cpu().clamp(0, 1) * scale
            boxes = clip_boxes_to_image(boxes, (int(h), int(w)))
            # a box needs x2 >= x1 and y2 >= y1: a prediction with swapped corners becomes its hull
            boxes = torch.stack([torch.minimum(boxes[:, 0], boxes[:, 2]), torch.minimum(boxes[:, 1], boxes[:, 3]),
                                 torch.maximum(boxes[:, 0], boxes[:, 2]), torch.maximum(boxes[:, 1], boxes[:, 3])], 1)
            scores = torch.sigmoid(out.logits[i].float().cpu())
            order = torch.argsort(scores, descending=True, stable=True)
            if nms_iou is not None:
                order = nms(boxes, scores, nms_iou)
            order = order[:top_k]
            results.append(Proposals(boxes[order].contiguous(), scores[order].contiguous(),
                                     torch.full((order.numel(),), MULTIBOX_SOURCE, dtype=torch.int64)))
        return results

    def propose(self, image: np.ndarray | torch.Tensor, *, top_k: int | None = None,
                nms_iou: float | None = None) -> Proposals:
        """The ``top_k`` most confident boxes of one image.

        Args:
            image: ``np.ndarray[H, W, 3]`` uint8 RGB, or ``Tensor[3, H, W]``.
            top_k: boxes kept (default ``config.top_k`` = 200).
            nms_iou: optional greedy NMS threshold applied before taking the top ``top_k``.

        Returns:
            :class:`Proposals`: boxes ``Tensor[k, 4]`` xyxy in original pixels, clipped to the image;
            scores = sigmoid confidence, decreasing; sources all 1 (``"multibox"``).
        """
        return self.propose_batch([image], top_k=top_k, nms_iou=nms_iou)[0]


# --------------------------------------------------------------------------------- build, save, load


def build_multibox(priors: torch.Tensor, config: MultiBoxConfig = MultiBoxConfig(), *,
                   weights: str | os.PathLike | None = None) -> MultiBox:
    """A MultiBox on a fresh GoogLeNet trunk (no classifier, no auxiliary heads).

    Args:
        priors: ``Tensor[K, 4]`` normalised xyxy.
        config: ``config.variant`` picks the trunk ("paper" or "torchvision"; ImageNet weights imply
            "torchvision"); ``num_priors`` is set to ``K``.
        weights: trunk initialisation: None (random), ``"imagenet"`` (torchvision variant), or a
            backbone checkpoint / state dict path (its classifier is dropped).
    """
    variant = config.variant if weights is None or os.fspath(weights) != "imagenet" else "torchvision"
    config = dataclasses.replace(config, variant=variant, num_priors=int(priors.shape[0]))
    trunk = googlenet(variant=variant, weights=weights, aux_logits=False)
    trunk.reset_classifier(0)
    return MultiBox(trunk, priors, config)


def save_multibox(path: str | os.PathLike, model: MultiBox, *, config: dict[str, Any] | None = None) -> None:
    """Write ``model`` as a backbone checkpoint of its trunk (0 classes) plus the MultiBox parts.

    Extra keys: ``multibox`` (:class:`MultiBoxConfig` as a dict), ``multibox_head`` (head state dict) and
    ``priors`` (``Tensor[K, 4]``). Atomic; loads with ``weights_only=True``.
    """
    save_checkpoint(path, model.trunk, class_names=[], preprocessing=model.preprocessing, config=config or {},
                    extra={"multibox": model.config.to_dict(), "priors": model.priors.detach().cpu(),
                           "multibox_head": {k: v.detach().cpu() for k, v in model.head.state_dict().items()}})


#: Bounds on a MultiBox checkpoint's numbers, checked before anything is built from them: key ->
#: (type, lowest, highest). The head's last layer has ``head_channels * head_grid**2 * 5 * num_priors``
#: weights (2.0M at the defaults); these bounds keep it under 1 GB.
_MULTIBOX_BOUNDS: dict[str, tuple[type, float, float]] = {
    "num_priors": (int, 1, 10_000), "input_size": (int, 32, 1024), "head_channels": (int, 1, 1024),
    "head_grid": (int, 1, 16), "top_k": (int, 1, 10_000), "dropout": (float, 0, 1), "alpha": (float, 0, 1e6),
    "conf_prior": (float, 1e-9, 1 - 1e-9),
}


def _check_multibox_parts(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Types and sizes of a MultiBox checkpoint's config and priors (one InputError line naming the file)."""
    d = ckpt["multibox"]
    if not isinstance(d, dict):
        raise InputError(path, "MultiBox config in checkpoint is not a dict")
    for key, (kind, low, high) in _MULTIBOX_BOUNDS.items():
        value = d.get(key)
        ok = value is None or (not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
                               and low <= value <= high)
        if not ok:
            raise InputError(path, f"MultiBox config {key} {short_repr(value)} is not a number in {low:g}..{high:g}")
    priors = ckpt["priors"]
    if not (isinstance(priors, torch.Tensor) and priors.ndim == 2 and priors.shape[1] == 4
            and 1 <= priors.shape[0] <= _MULTIBOX_BOUNDS["num_priors"][2] and priors.is_floating_point()):
        shape = list(priors.shape) if isinstance(priors, torch.Tensor) else type(priors).__name__
        raise InputError(path, f"MultiBox priors are {shape}, expected a float Tensor[K, 4] with K <= "
                               f"{_MULTIBOX_BOUNDS['num_priors'][2]}")
    if d.get("head_channels", 128) * d.get("head_grid", 4) ** 2 * 5 * priors.shape[0] > 250_000_000:
        raise InputError(path, "MultiBox head too large (head_channels x head_grid^2 x 5 x priors above 250M)")
    if not isinstance(ckpt["multibox_head"], dict):
        raise InputError(path, "MultiBox head in checkpoint is not a state dict")


def load_multibox(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> MultiBox:
    """Rebuild a MultiBox written by :func:`save_multibox` (evaluation mode, on ``device``).

    Raises:
        InputError: one line, for a missing/corrupt file or a checkpoint that is not a MultiBox.
    """
    ckpt = load_checkpoint(path)
    if not {"multibox", "multibox_head", "priors"} <= set(ckpt):
        raise InputError(path, "not a MultiBox checkpoint (no priors / box head); "
                               "train one with 'detect multibox train'")
    _check_multibox_parts(ckpt, path)
    trunk, _ = model_from_checkpoint(ckpt)
    try:
        config = MultiBoxConfig.from_dict(ckpt["multibox"])
        model = MultiBox(trunk, ckpt["priors"], config, checked_preprocessing(ckpt["preprocessing"], path))
        model.head.load_state_dict(ckpt["multibox_head"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(path, f"MultiBox parts do not fit ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()
