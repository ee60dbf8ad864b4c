"""COCO box evaluation: pycocotools' ``COCOeval`` with its printing silenced and named results.

The numbers are pycocotools' own (``COCOeval.stats`` and ``eval["precision"]``), computed on:

* for a COCO data set read from a file, that file's raw JSON (so ``area`` is COCO's segment area and boxes
  are unclipped, exactly as ``COCO(path)`` sees them), restricted to the data set's images;
* for any other data set (ILSVRC, VOC, or COCO built in memory), a COCO ground truth made from the records:
  image ids ``1..N`` by position, category ids = labels ``1..K``, ``area`` = box area, ``iscrowd`` =
  ``ignore``.

Results are loaded the way ``COCO.loadRes`` loads boxes (``area = w * h``, ``iscrowd = 0``, ids ``1..D``)
but without its ``segmentation`` polygons, which box evaluation never reads, and without its crash on an
empty list.

Edge cases (pycocotools' conventions, tested):

* no detections: every category with ground truth has AP = AR = 0 (what ``COCOeval`` computes when an
  image has ground truth and no detections); categories without ground truth are -1.
* no ground-truth boxes: every value is -1 (pycocotools: "no ground truth, undefined"), even with detections.
* no images: every value is -1.
* per-class AP is the mean of ``precision[:, :, k, area=all, maxDets=100]`` over entries > -1 (detectron2's
  rule), -1 for a class without ground truth.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, so `detect run` works where pycocotools is not installed
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

from detect.datasets import DetectionDataset, read_coco
from detect.evaluation.results import to_coco_results
from detect.structures import Detections

log = logging.getLogger(__name__)

#: ``COCOeval.stats`` order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class CocoMetrics:
    """pycocotools' box metrics, as fractions in [0, 1] (-1: undefined, no ground truth).

    Attributes:
        AP .. ARl: ``COCOeval.stats`` by name: AP@[.5:.95], AP@.5, AP@.75, AP small/medium/large,
            AR with 1/10/100 detections per image, AR small/medium/large.
        per_class_AP: class name -> AP@[.5:.95] (area all, 100 detections), -1 without ground truth.
        precision: pycocotools' ``eval["precision"]``, ``[T=10 IoUs, R=101 recalls, K, A=4 areas, M=3]``.
        iou_thresholds: ``[T]`` (0.5 .. 0.95); recall_thresholds: ``[R]`` (0 .. 1).
        class_names: the K class names in ``precision``'s class order.
    """

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    AR1: float
    AR10: float
    AR100: float
    ARs: float
    ARm: float
    ARl: float
    per_class_AP: dict[str, float] = field(default_factory=dict)
    precision: np.ndarray = field(default_factory=lambda: np.zeros((10, 101, 0, 4, 3)), repr=False)
    iou_thresholds: np.ndarray = field(default_factory=lambda: np.linspace(0.5, 0.95, 10), repr=False)
    recall_thresholds: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, 101), repr=False)
    class_names: list[str] = field(default_factory=list, repr=False)

    def stats(self) -> dict[str, float]:
        """The twelve named values, in ``COCOeval.stats`` order."""
        return {name: getattr(self, name) for name in STAT_NAMES}

    def per_class_AP50(self) -> dict[str, float]:
        """Class name -> AP at IoU 0.5 (area all, 100 detections), -1 without ground truth: the mean of
        ``precision`` over its recall thresholds, as pycocotools' summary averages it."""
        p = self.precision[0, :, :, 0, -1]  # [R, K]
        return {name: float(p[:, k][p[:, k] > -1].mean()) if (p[:, k] > -1).any() else -1.0
                for k, name in enumerate(self.class_names)}

    def pr_curves(self) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
        """Precision-recall curves for :mod:`detect.evaluation.plots`: ``{"all": ..., class: ...}``.

        Each entry is a list of ``(label, recall[R], precision[R])`` at IoU 0.5, 0.75 and averaged over
        0.5:0.95 (area all, 100 detections); "all" averages the classes that have ground truth.
        """
        curves: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
        p = self.precision[:, :, :, 0, -1]  # [T, R, K]
        rec = self.recall_thresholds
        valid = (p > -1).all(axis=(0, 1))  # classes with ground truth
        if valid.any():
            mean = p[:, :, valid].mean(axis=2)
            curves["all"] = [("IoU 0.50", rec, mean[0]), ("IoU 0.75", rec, mean[5]),
                             ("IoU 0.50:0.95", rec, mean.mean(axis=0))]
        for k, name in enumerate(self.class_names):
            if valid[k]:
                curves[name] = [("IoU 0.50", rec, p[0, :, k]), ("IoU 0.75", rec, p[5, :, k]),
                                ("IoU 0.50:0.95", rec, p[:, :, k].mean(axis=0))]
        return curves


def _silent(func, *args, **kwargs):
    """Call ``func`` with pycocotools' prints sent nowhere."""
    with contextlib.redirect_stdout(io.StringIO()):
        return func(*args, **kwargs)


def _api(dataset_dict: dict) -> COCO:
    from pycocotools.coco import COCO

    api = COCO()
    api.dataset = dataset_dict
    _silent(api.createIndex)
    return api


@dataclass(frozen=True)
class CocoGroundTruth:
    """Ground truth in pycocotools' form plus the maps from our ids to its ids."""

    api: COCO
    image_ids: list[int]                 # pycocotools image ids to evaluate, in record order
    image_map: dict[Any, int]            # data set image id -> pycocotools image id
    category_map: dict[Any, int]         # data set category id -> pycocotools category id
    class_names: list[str]


def _with_defaults(ann: dict) -> dict:
    """A raw annotation with COCO's ``area`` and ``iscrowd`` filled in where the file leaves them out (our
    reader treats them as optional; pycocotools' evaluator reads both and would raise KeyError)."""
    if "area" in ann and "iscrowd" in ann:
        return ann
    _, _, w, h = ann["bbox"]
    return {"iscrowd": 0, "area": w * h, **ann}


def coco_ground_truth(dataset: DetectionDataset) -> CocoGroundTruth:
    """Build pycocotools' ground truth for ``dataset`` (see the module docstring for the two ways)."""
    source = Path(dataset.source)
    ids = [r.image_id for r in dataset.records]
    if dataset.kind == "coco" and source.is_file() and len({type(i) for i in ids}) <= 1:
        # (pycocotools sorts image ids: a file mixing numbers and strings takes the records' way below)
        with open(source, "rb") as f:
            raw = json.load(f)
        raw["annotations"] = [_with_defaults(ann) for ann in raw["annotations"]]
        return CocoGroundTruth(_api(raw), ids, {i: i for i in ids}, {c: c for c in dataset.category_ids},
                               list(dataset.class_names))
    images, anns = [], []
    for pos, rec in enumerate(dataset.records):
        images.append({"id": pos + 1, "width": rec.width, "height": rec.height, "file_name": str(rec.file)})
        for box, label, ignore in zip(rec.boxes.tolist(), rec.labels.tolist(), rec.ignore.tolist()):
            x1, y1, x2, y2 = box
            anns.append({"id": len(anns) + 1, "image_id": pos + 1, "category_id": label,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": int(ignore)})
    cats = [{"id": k + 1, "name": name} for k, name in enumerate(dataset.class_names)]
    api = _api({"images": images, "annotations": anns, "categories": cats})
    return CocoGroundTruth(api, list(range(1, len(images) + 1)),
                           {rec.image_id: pos + 1 for pos, rec in enumerate(dataset.records)},
                           {c: k + 1 for k, c in enumerate(dataset.category_ids)}, list(dataset.class_names))


def coco_results_api(gt: CocoGroundTruth, results: list[dict]) -> COCO:
    """pycocotools' results object for a checked results list, as ``COCO.loadRes`` builds it for boxes."""
    anns = []
    for i, det in enumerate(results):
        x, y, w, h = det["bbox"]
        anns.append({"id": i + 1, "image_id": gt.image_map[det["image_id"]],
                     "category_id": gt.category_map[det["category_id"]], "bbox": [x, y, w, h],
                     "score": det["score"], "area": w * h, "iscrowd": 0})
    return _api({"images": list(gt.api.dataset["images"]), "categories": list(gt.api.dataset["categories"]),
                 "annotations": anns})


def run_cocoeval(gt: CocoGroundTruth, dt: COCO, *, timings: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> COCOeval:
    """``COCOeval(gt, dt, "bbox")`` on ``gt.image_ids``: evaluate, accumulate, summarize, silently.

    ``timings``, when given, receives the seconds of each stage by ``clock`` (keys ``evaluate``,
    ``accumulate``, ``summarize``).
    """
    from pycocotools.cocoeval import COCOeval

    evaluator = COCOeval(gt.api, dt, "bbox")
    evaluator.params.imgIds = list(gt.image_ids)
    for stage in ("evaluate", "accumulate", "summarize"):
        start = clock()
        _silent(getattr(evaluator, stage))
        if timings is not None:
            timings[stage] = clock() - start
    return evaluator


def metrics_from_cocoeval(evaluator: COCOeval, class_names: list[str]) -> CocoMetrics:
    """Name ``evaluator.stats`` and compute per-class AP from its precision array."""
    precision = np.asarray(evaluator.eval["precision"])
    per_class = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[name] = float(p.mean()) if p.size else -1.0
    stats = [float(v) for v in evaluator.stats]
    return CocoMetrics(*stats, per_class_AP=per_class, precision=precision,
                       iou_thresholds=np.asarray(evaluator.params.iouThrs),
                       recall_thresholds=np.asarray(evaluator.params.recThrs), class_names=list(class_names))


def _undefined(class_names: list[str]) -> CocoMetrics:
    return CocoMetrics(*([-1.0] * len(STAT_NAMES)), per_class_AP={n: -1.0 for n in class_names},
                       precision=-np.ones((10, 101, len(class_names), 4, 3)), class_names=list(class_names))


def evaluate_coco(gt: DetectionDataset | str | os.PathLike,
                  results: list[dict] | Mapping[Any, Detections]) -> CocoMetrics:
    """COCO box metrics of ``results`` against ``gt``, pycocotools' numbers exactly.

    Args:
        gt: a :class:`DetectionDataset` or the path of a COCO instances JSON file.
        results: a checked COCO results list (:func:`~detect.evaluation.results.load_coco_results`, with the
            data set's own ids) or ``{image_id: Detections}``.

    Returns:
        :class:`CocoMetrics`; see the module docstring for empty detections / empty ground truth.
    """
    dataset = gt if isinstance(gt, DetectionDataset) else read_coco(gt)
    if not isinstance(results, list):
        results = to_coco_results(results, dataset)
    if not dataset.records:
        log.warning("%s: no images to evaluate; all metrics are -1", dataset.source)
        return _undefined(dataset.class_names)
    cgt = coco_ground_truth(dataset)
    evaluator = run_cocoeval(cgt, coco_results_api(cgt, results))
    return metrics_from_cocoeval(evaluator, cgt.class_names)


__all__ = ["CocoMetrics", "CocoGroundTruth", "STAT_NAMES", "coco_ground_truth", "coco_results_api",
           "evaluate_coco", "metrics_from_cocoeval", "run_cocoeval"]
