"""An evaluator that collects detections image by image (detectron2's ``reset / process / evaluate``).

For loops that produce detections one image at a time (validation during training, ``detect run`` over a
data set): nothing is kept but the detections; the metric runs once at the end.
"""

from __future__ import annotations

from typing import Any

from detect.datasets import DetectionDataset
from detect.evaluation.coco import CocoMetrics, evaluate_coco
from detect.evaluation.ilsvrc import IlsvrcMetrics, evaluate_ilsvrc
from detect.structures import Detections


class DetectionEvaluator:
    """Collect ``Detections`` per image of ``dataset``, then compute COCO or ILSVRC metrics.

    Args:
        dataset: the ground truth.
        metric: ``"coco"``, ``"ilsvrc"`` or ``"auto"`` (COCO for COCO data sets, else ILSVRC's rule).
    """

    def __init__(self, dataset: DetectionDataset, metric: str = "auto") -> None:
        if metric not in ("auto", "coco", "ilsvrc"):
            raise ValueError(f"metric must be 'auto', 'coco' or 'ilsvrc', got {metric!r}")
        self.dataset = dataset
        self.metric = metric if metric != "auto" else ("coco" if dataset.kind == "coco" else "ilsvrc")
        self._known = {r.image_id for r in dataset.records}
        self._dets: dict[Any, Detections] = {}

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._dets = {}

    def process(self, image_id: int | str, detections: Detections) -> None:
        """Record the detections of one image (its data-set id; labels ``1..K``); a repeat replaces them."""
        if image_id not in self._known:
            raise ValueError(f"image id {image_id!r} is not in {self.dataset.source}")
        self._dets[image_id] = detections

    def evaluate(self) -> CocoMetrics | IlsvrcMetrics:
        """Metrics over the whole data set; images never processed count as having no detections."""
        if self.metric == "coco":
            return evaluate_coco(self.dataset, self._dets)
        return evaluate_ilsvrc(self.dataset, self._dets)
