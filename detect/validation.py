"""Validation while training (the engine's ``validate``, :data:`backbone.engine.Validate`) for the detector.

* :class:`ProposalRecallValidation` (``detect multibox train``): recall@0.5 of the top 200 MultiBox boxes
  per held-out image, with :func:`proposals.metrics.proposal_recall` as ``detect proposals --gt``
  computes it (crowd/difficult boxes left out).
* :class:`DetectionValidation` (``detect train``): the region classifier of the epoch run as the detector
  that ``detect eval --weights best.pt`` runs (:class:`detect.pipeline.Detector`, paper mode without
  MultiBox: selective search "fast" at superpixel scale 2, context warps, softmax, per-class NMS), then
  evaluated with :mod:`detect.evaluation`: COCO's metric for COCO ground truth (AP, AP50), the ILSVRC
  devkit's for XML ground truth (mAP). Selective search runs once per image, before training, into a
  proposal cache (:mod:`proposals.cache`), not every epoch. ``fast=True`` is ``detect eval --fast``
  instead (single-strategy selective search, at most 300 proposals): the classifier dominates the cost
  of validation on a CPU, and that caps it.

Both only read the model they are given; the detector runs on a copy with BatchNorm folded into the convs,
as :func:`detect.pipeline.load_detector` does for ``detect eval``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from backbone.console import wants_progress
from backbone.images import read_image
from detect.datasets import DetectionDataset, ImageRecord
from detect.pipeline import Detector, DetectorConfig

log = logging.getLogger(__name__)

MULTIBOX_TOP_K = 200  # section 8: the 200 most confident MultiBox boxes are the proposals


def split_records(records: Sequence[ImageRecord], fraction: float, *,
                  seed: int = 0) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Hold out ``round(fraction * N)`` (at least 1) randomly chosen images, seeded by ``seed``.

    Returns:
        ``(training records, validation records)``, each in the input order.

    Raises:
        ValueError: ``fraction`` not in (0, 1), or a split that leaves no training or no validation image.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {fraction}")
    n = len(records)
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise ValueError(f"--val-fraction {fraction} of {n} images leaves none to train on")
    held_out = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return ([r for i, r in enumerate(records) if i not in held_out],
            [r for i, r in enumerate(records) if i in held_out])


def subset(dataset: DetectionDataset, records: Sequence[ImageRecord]) -> DetectionDataset:
    """``dataset`` restricted to ``records`` (same classes, source and kind; the evaluators then score those
    images only)."""
    return dataclasses.replace(dataset, records=list(records))


class ProposalRecallValidation:
    """``validate(multibox, epoch)``: recall of the top ``top_k`` MultiBox boxes on held-out images.

    Returns ``{"recall_50", "recall_70", "abo"}`` (:class:`proposals.metrics.ProposalStats`); NaN when
    the images have no (non-ignored) ground truth.
    """

    best_metric = "recall_50"

    def __init__(self, records: Sequence[ImageRecord], *, top_k: int = MULTIBOX_TOP_K, batch_size: int = 16) -> None:
        self.records, self.top_k, self.batch_size = list(records), top_k, batch_size

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        from proposals.metrics import proposal_recall

        boxes: list[torch.Tensor] = []
        for start in range(0, len(self.records), self.batch_size):
            chunk = self.records[start:start + self.batch_size]
            images = [read_image(r.file) for r in chunk]
            boxes.extend(p.boxes for p in model.propose_batch(images, top_k=self.top_k))
        keep = [~r.ignore.bool() for r in self.records]
        stats = proposal_recall(boxes, [r.boxes[k] for r, k in zip(self.records, keep)],
                                [r.labels[k] for r, k in zip(self.records, keep)])
        return {"recall_50": stats.recall_50, "recall_70": stats.recall_70, "abo": stats.abo}


def validation_config(*, fast: bool = False) -> DetectorConfig:
    """The detector ``detect eval --weights`` runs by default (paper mode; without MultiBox weights its
    proposals are selective search "fast" at superpixel scale 2), or with ``--fast`` (single-strategy
    selective search, at most 300 proposals)."""
    return DetectorConfig(fast=fast)


def proposal_method(config: DetectorConfig):
    """The :class:`proposals.merge.ProposalMethod` whose boxes equal the detector's own selective search."""
    from detect.pipeline import _ss_config  # the very config Detector.detect would compute proposals with
    from proposals.merge import ProposalMethod

    return ProposalMethod("ss", ss_config=_ss_config(config))


def cache_proposals(records: Sequence[ImageRecord], root: str | os.PathLike, config: DetectorConfig, *,
                    workers: int = 1) -> Path:
    """Fill (resumably) the proposal cache of ``records`` under ``root``; returns its folder."""
    from proposals.cache import build_cache, cache_dir

    method = proposal_method(config)
    folder = cache_dir(root, method)
    summary = build_cache(records, method, folder, workers=max(1, workers))
    log.info("validation proposals: %d images (%d computed) in %s", summary["images"], summary["computed"], folder)
    return folder


class DetectionValidation:
    """``validate(model, epoch)`` for region-classifier training: detect on held-out images, evaluate.

    Args:
        dataset: the validation ground truth (a whole data set, or :func:`subset` of one).
        proposals_folder: the cache :func:`cache_proposals` filled for ``dataset.records`` (read on the
            first call, then kept in memory).
        config: the detector's settings (default :func:`validation_config`).
        metric: ``"coco"`` (AP, AP50), ``"ilsvrc"`` (mAP) or ``"auto"`` (coco for COCO ground truth,
            ilsvrc for XML, as ``detect eval``).

    The model is a :class:`detect.regions.TrainView` (or a :class:`detect.classifier.RegionClassifier`).
    """

    def __init__(self, dataset: DetectionDataset, proposals_folder: str | os.PathLike, *,
                 config: DetectorConfig | None = None, metric: str = "auto") -> None:
        if metric == "auto":
            metric = "coco" if dataset.kind == "coco" else "ilsvrc"
        if metric not in ("coco", "ilsvrc"):
            raise ValueError(f"metric must be 'coco', 'ilsvrc' or 'auto', got {metric!r}")
        self.dataset, self.folder, self.metric = dataset, Path(proposals_folder), metric
        self.config = config or validation_config()
        self._proposals: list[Any] | None = None

    @property
    def best_metric(self) -> str:
        """The number best.pt is chosen by: AP50 (COCO) or the devkit's mAP (ILSVRC, IoU 0.5 rule)."""
        return "AP50" if self.metric == "coco" else "mAP"

    def detections(self, model: nn.Module) -> dict[Any, Any]:
        """``{image_id: Detections}`` of the model's region classifier on every validation image."""
        from backbone.fuse import prepare_for_inference_
        from detect.classifier import Ensemble
        from proposals.cache import load_cached

        if self._proposals is None:
            self._proposals = [load_cached(self.folder, r.image_id) for r in self.dataset.records]
        classifier = copy.deepcopy(getattr(model, "classifier", model))
        prepare_for_inference_(classifier.model)  # as load_detector does for `detect eval --weights`
        device = next(classifier.parameters()).device
        detector = Detector(Ensemble([classifier]), self.config, device=device)
        dets = {}
        bar = tqdm(total=len(self.dataset.records), desc="validation", unit="img", leave=False,
                   disable=not wants_progress())
        for record, props in zip(self.dataset.records, self._proposals):
            image = read_image(record.file, max_pixels=self.config.max_pixels)
            dets[record.image_id] = detector.detect(image, proposals=props).detections
            bar.update()
        bar.close()
        return dets

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        from detect.evaluation import evaluate_coco, evaluate_ilsvrc, results_to_detections, to_coco_results

        results = to_coco_results(self.detections(model), self.dataset)  # as `detect eval --weights`
        if self.metric == "coco":
            metrics = evaluate_coco(self.dataset, results)
            return {"AP": metrics.AP, "AP50": metrics.AP50}
        return {"mAP": evaluate_ilsvrc(self.dataset, results_to_detections(results, self.dataset)).mAP}
