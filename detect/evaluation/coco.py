"""COCO box evaluation: pycocotools' numbers, computed by :mod:`detect.evaluation.cocoeval` from one parse
of the ground truth, with named results.

The ground truth evaluated is, as ``COCO(path)`` sees it:

* for a COCO instances file (a path, or a data set read from one): that file's raw JSON, so ``area`` is
  COCO's segment area and boxes are unclipped; a data set evaluates only its own images (pycocotools'
  ``params.imgIds``); ``area`` and ``iscrowd`` default to ``w * h`` and 0 where the file leaves them out;
* for any other data set (ILSVRC, VOC, or COCO built in memory): its records, image ids ``1..N`` by
  position, ``area`` = box area, ``iscrowd`` = ``ignore``.

Results are taken as ``COCO.loadRes`` takes boxes (``area = w * h``, not crowd), without its crash on an
empty list.

Edge cases (pycocotools' conventions, tested against it):

* no detections: every category with ground truth has AP = AR = 0; categories without ground truth are -1.
* no ground-truth boxes: every value is -1 (pycocotools: "no ground truth, undefined"), even with detections.
* no images: every value is -1.
* per-class AP is the mean of ``precision[:, :, k, area=all, maxDets=100]`` over entries > -1 (detectron2's
  rule), -1 for a class without ground truth.

This module imports neither torch nor pycocotools: ``detect eval --results`` on COCO JSON runs on numpy and
numba alone.
"""

from __future__ import annotations

import logging
import os
from operator import itemgetter, methodcaller
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from backbone.errors import InputError, has_control, short_repr
from backbone.safeio import load_json
from detect.cocojson import check_fields, check_id, is_id, is_number, read_categories, require_list
from detect.evaluation.cocoeval import (IOU_THRESHOLDS, RECALL_THRESHOLDS, CocoEvalArrays, DetectionBoxes,
                                        GroundTruthBoxes, evaluate_boxes)

if TYPE_CHECKING:
    from detect.datasets import DetectionDataset
    from detect.structures import Detections

log = logging.getLogger(__name__)

#: Largest image width or height accepted (as :data:`detect.datasets.MAX_SIDE`).
MAX_SIDE = 2**31 - 1

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
        recall: ``eval["recall"]`` ``[T, K, A, M]``; scores: ``eval["scores"]`` ``[T, R, K, A, M]``.
        iou_thresholds: ``[T]`` (0.5 .. 0.95); recall_thresholds: ``[R]`` (0 .. 1).
        class_names: the K class names in ``precision``'s class order.
        num_ground_truth: class name -> regular (non-crowd) ground-truth boxes.
        num_detections: class name -> detections in the results.
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
    iou_thresholds: np.ndarray = field(default_factory=lambda: IOU_THRESHOLDS.copy(), repr=False)
    recall_thresholds: np.ndarray = field(default_factory=lambda: RECALL_THRESHOLDS.copy(), repr=False)
    class_names: list[str] = field(default_factory=list, repr=False)
    recall: np.ndarray = field(default_factory=lambda: np.zeros((10, 0, 4, 3)), repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros((10, 101, 0, 4, 3)), repr=False)
    num_ground_truth: dict[str, int] = field(default_factory=dict, repr=False)
    num_detections: dict[str, int] = field(default_factory=dict, repr=False)

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


@dataclass(frozen=True)
class CocoGroundTruth:
    """Ground truth as the evaluator reads it, with the maps from a results file's ids to its indices.

    Attributes:
        source: the annotation file or folder.
        image_ids: evaluated image ids in increasing order (pycocotools' ``np.unique(imgIds)``; records of a
            non-COCO data set keep their order; a file whose ids mix integers and strings is refused, as
            :func:`detect.datasets.read_coco` refuses it); a box's ``image`` index is the position of its
            image here.
        category_ids: category ids in increasing order (``category`` index); class_names: their names.
        boxes: :class:`~detect.evaluation.cocoeval.GroundTruthBoxes`.
        file_names: image id -> ``file_name`` (results written by ``detect run`` may name images by file).
    """

    source: Path
    image_ids: list[Any]
    category_ids: list[Any]
    class_names: list[str]
    boxes: GroundTruthBoxes
    file_names: dict[Any, str] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)


def _numeric_types(types: set[type]) -> bool:
    """Every type a number type (int, float and their subclasses such as numpy's float64), none bool."""
    return all(issubclass(t, (int, float)) and not issubclass(t, bool) for t in types)


def _one_kind(path: Path, ids: Any, what: str) -> None:
    if len({type(i) for i in ids}) > 1:
        raise InputError(path, f"{what} ids mix integers and strings; use one kind in a file")


def coco_ground_truth_from_json(data: Any, path: str | os.PathLike, *,
                                image_ids: Sequence[Any] | None = None) -> CocoGroundTruth:
    """Ground truth from a parsed COCO instances file (checked as :func:`detect.datasets.read_coco` checks).

    Args:
        data: the file's JSON; path: the file (for messages).
        image_ids: evaluate only these images (default: all of the file's).

    Raises:
        InputError: naming ``path``: missing lists or fields, duplicate ids, an annotation of an unknown
            image or category, a bbox that is not four finite numbers.
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise InputError(path, "not a COCO instances file: expected a JSON object with 'images', "
                               "'annotations' and 'categories'")
    images, anns, cats = (require_list(path, data, key) for key in ("images", "annotations", "categories"))
    names: dict[Any, str] = read_categories(path, cats)
    files: dict[Any, str] = {}
    for img in images:
        check_fields(path, "image", img, ("id", "file_name", "width", "height"))
        check_id(path, img["id"], "image id")
        if not isinstance(img["file_name"], str) or has_control(img["file_name"]):
            raise InputError(path, f"image id {short_repr(img['id'])} has file_name {short_repr(img['file_name'])}, "
                                   "expected a string without control characters")
        if img["id"] in files:
            raise InputError(path, f"duplicate image id {short_repr(img['id'])}")
        w, h = img["width"], img["height"]
        if not (type(w) is int and type(h) is int and 0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise InputError(path, f"image id {short_repr(img['id'])} has size {short_repr(w)}x{short_repr(h)}, "
                                   f"expected positive integers up to {MAX_SIDE}")
        files[img["id"]] = img["file_name"]
    _one_kind(path, files, "image")
    category_ids = sorted(names)
    cat_index = {c: k for k, c in enumerate(category_ids)}
    chosen = list(files) if image_ids is None else list(dict.fromkeys(image_ids))
    evaluated = sorted(chosen)
    img_index = {i: n for n, i in enumerate(evaluated)}
    for ann in anns:  # the checks first, in one pass (a bad file fails before any array is built)
        check_fields(path, "annotation", ann, ("id", "image_id", "category_id", "bbox"))
        check_id(path, ann["id"], "annotation id")
    ids = [ann["id"] for ann in anns]
    if len(set(ids)) != len(ids):
        seen: set = set()
        raise InputError(path, f"duplicate annotation id {short_repr(next(i for i in ids if i in seen or seen.add(i)))}")
    rows = []
    for ann in anns:
        if not is_id(ann["image_id"]) or ann["image_id"] not in files:
            raise InputError(path, f"annotation id {short_repr(ann['id'])} refers to unknown image id "
                                   f"{short_repr(ann['image_id'])}")
        if not is_id(ann["category_id"]) or ann["category_id"] not in cat_index:
            raise InputError(path, f"annotation id {short_repr(ann['id'])} refers to unknown category id "
                                   f"{short_repr(ann['category_id'])}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            raise InputError(path, f"annotation id {short_repr(ann['id'])} has bbox {short_repr(bbox)}, "
                                   "expected [x, y, w, h] numbers")
        n = img_index.get(ann["image_id"])
        if n is not None:
            area = ann["area"] if "area" in ann else bbox[2] * bbox[3]
            crowd = ann.get("iscrowd", 0)
            if type(crowd) is not int or crowd not in (0, 1):
                raise InputError(path, f"annotation id {short_repr(ann['id'])} has iscrowd {short_repr(crowd)}, "
                                       "expected 0 or 1")
            if not is_number(area):
                raise InputError(path, f"annotation id {short_repr(ann['id'])} has area {short_repr(area)}, "
                                       "expected a number")
            rows.append((n, cat_index[ann["category_id"]], *bbox, area, crowd == 1,
                         ann["id"] == 0))
    table = np.array(rows, dtype=np.float64).reshape(-1, 9)
    boxes = GroundTruthBoxes(image=table[:, 0].astype(np.int64), category=table[:, 1].astype(np.int64),
                             boxes=np.ascontiguousarray(table[:, 2:6]), area=table[:, 6],
                             crowd=table[:, 7] != 0, zero_id=table[:, 8] != 0)
    return CocoGroundTruth(path, evaluated, category_ids, [names[c] for c in category_ids], boxes,
                           {i: files[i] for i in evaluated})


def read_coco_ground_truth(path: str | os.PathLike) -> CocoGroundTruth:
    """Read a COCO instances JSON file as :class:`CocoGroundTruth` (one parse, numpy only)."""
    p = Path(path)
    return coco_ground_truth_from_json(load_json(p), p.resolve())


def coco_ground_truth(dataset: DetectionDataset) -> CocoGroundTruth:
    """The ground truth pycocotools would evaluate for ``dataset`` (see the module docstring)."""
    source = Path(dataset.source)
    ids = [r.image_id for r in dataset.records]
    if dataset.kind == "coco" and source.is_file():
        return coco_ground_truth_from_json(load_json(source), source, image_ids=ids)
    rows = []
    for pos, rec in enumerate(dataset.records):
        b = rec.boxes.numpy().astype(np.float64).reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        for (x1, y1, _, _), bw, bh, label, ignore in zip(b.tolist(), w.tolist(), h.tolist(),
                                                          rec.labels.numpy().tolist(), rec.ignore.numpy().tolist()):
            rows.append((pos, label - 1, x1, y1, bw, bh, bw * bh, ignore, 0))
    table = np.array(rows, dtype=np.float64).reshape(-1, 9)
    boxes = GroundTruthBoxes(image=table[:, 0].astype(np.int64), category=table[:, 1].astype(np.int64),
                             boxes=np.ascontiguousarray(table[:, 2:6]), area=table[:, 6],
                             crowd=table[:, 7] != 0, zero_id=np.zeros(len(table), dtype=bool))
    return CocoGroundTruth(source, ids, list(dataset.category_ids), list(dataset.class_names), boxes,
                           {r.image_id: str(r.file) for r in dataset.records}, )


def _fast_detection_boxes(results: list, gt: CocoGroundTruth) -> DetectionBoxes | None:
    """The arrays of a results list that passes every check, else None (then the slow check names the
    problem). Type checks run over whole columns: ``set(map(type, ...))`` at C speed."""
    if not results:
        return DetectionBoxes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    try:
        if set(map(type, results)) != {dict}:
            return None
        # strict id types (a bool hashes as 0/1 and would find an image): exactly int or exactly str
        id_types = set(map(type, map(itemgetter("image_id"), results))) | set(
            map(type, map(itemgetter("category_id"), results)))
        if not id_types <= {int, str} or not set(map(type, map(methodcaller("get", "file_name", ""), results))) \
                <= {str}:
            return None
        img_of = {i: n for n, i in enumerate(gt.image_ids)}
        cat_of = {c: k for k, c in enumerate(gt.category_ids)}
        image = np.fromiter((img_of.get(d["image_id"], -1) for d in results), np.int64, len(results))
        category = np.fromiter((cat_of.get(d["category_id"], -1) for d in results), np.int64, len(results))
        scores = [d["score"] for d in results]
        bboxes = [d["bbox"] for d in results]
    except (KeyError, TypeError):  # a missing field, an unhashable id
        return None
    if (image < 0).any() or (category < 0).any():
        return None
    if not _numeric_types(set(map(type, scores))) or set(map(type, bboxes)) != {list} \
            or set(map(len, bboxes)) != {4}:
        return None
    flat = [v for b in bboxes for v in b]
    if not _numeric_types(set(map(type, flat))):
        return None
    boxes = np.array(flat, dtype=np.float64).reshape(-1, 4)
    score = np.array(scores, dtype=np.float64)
    if not (np.isfinite(boxes).all() and np.isfinite(score).all() and (boxes[:, 2:] >= 0).all()):
        return None
    return DetectionBoxes(image, category, boxes, score)


def coco_detection_boxes(results: list, gt: CocoGroundTruth,
                         path: str | os.PathLike | None = None) -> DetectionBoxes:
    """A COCO results list (ground truth's own ids) as arrays for :func:`evaluate_boxes`.

    Results of images outside ``gt.image_ids`` are refused (pycocotools' ``loadRes`` asserts the same).

    Raises:
        InputError: (naming ``path``) as :func:`detect.evaluation.results.check_coco_results`.
    """
    boxes = _fast_detection_boxes(results, gt)
    if boxes is None:
        from detect.evaluation.results import check_coco_results

        check_coco_results(results, gt, path)  # raises with the precise problem, or maps file names to ids
        boxes = _fast_detection_boxes(results, gt)
        assert boxes is not None, "check_coco_results passed a list the fast path refused"
    return boxes


def select_categories(gt: CocoGroundTruth, boxes: DetectionBoxes,
                      keep: Sequence[int]) -> tuple[CocoGroundTruth, DetectionBoxes]:
    """Only the categories at indices ``keep`` (0-based, of ``gt.category_ids``): the others' ground truth
    and detections left out and the kept ones renumbered ``0..len(keep)-1`` in id order. Evaluated, this
    gives pycocotools' numbers with ``params.catIds`` set to those ids (categories are matched apart)."""
    keep = sorted(set(int(k) for k in keep))
    new = np.full(gt.num_classes, -1, np.int64)
    new[keep] = np.arange(len(keep))
    g = gt.boxes
    mg = new[g.category] >= 0
    kept_gt = GroundTruthBoxes(image=g.image[mg], category=new[g.category[mg]], boxes=g.boxes[mg], area=g.area[mg],
                               crowd=g.crowd[mg], zero_id=g.zero_id[mg])
    md = new[boxes.category] >= 0
    kept_dets = DetectionBoxes(boxes.image[md], new[boxes.category[md]], boxes.boxes[md], boxes.scores[md])
    return (replace(gt, category_ids=[gt.category_ids[k] for k in keep], class_names=[gt.class_names[k] for k in keep],
                    boxes=kept_gt), kept_dets)


def metrics_from_arrays(arrays: CocoEvalArrays, class_names: Sequence[str]) -> CocoMetrics:
    """Name the stats and compute per-class AP from the precision array."""
    per_class = {}
    for k, name in enumerate(class_names):
        p = arrays.precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[name] = float(p.mean()) if p.size else -1.0
    return CocoMetrics(*(float(v) for v in arrays.stats), per_class_AP=per_class, precision=arrays.precision,
                       class_names=list(class_names), recall=arrays.recall, scores=arrays.scores,
                       num_ground_truth=dict(zip(class_names, arrays.num_ground_truth.tolist())),
                       num_detections=dict(zip(class_names, arrays.num_detections.tolist())))


def evaluate_coco(gt: DetectionDataset | CocoGroundTruth | str | os.PathLike,
                  results: list[dict] | Mapping[Any, Detections] | DetectionBoxes) -> CocoMetrics:
    """COCO box metrics of ``results`` against ``gt``, pycocotools' numbers exactly.

    Args:
        gt: a :class:`DetectionDataset`, a :class:`CocoGroundTruth` or the path of a COCO instances JSON file.
        results: a COCO results list with the ground truth's own ids (checked here), ``{image_id:
            Detections}`` (data set only), or :class:`DetectionBoxes` built for ``gt``.

    Returns:
        :class:`CocoMetrics`; see the module docstring for empty detections / empty ground truth.
    """
    dataset = None
    if isinstance(gt, (str, os.PathLike)):
        gt = read_coco_ground_truth(gt)
    elif not isinstance(gt, CocoGroundTruth):
        dataset, gt = gt, coco_ground_truth(gt)
    if not isinstance(results, (list, DetectionBoxes)):
        if dataset is None:
            raise TypeError("{image_id: Detections} results need a DetectionDataset as ground truth")
        from detect.evaluation.results import to_coco_results

        results = to_coco_results(results, dataset)
    if isinstance(results, list):
        results = coco_detection_boxes(results, gt)
    if not gt.image_ids:
        log.warning("%s: no images to evaluate; all metrics are -1", gt.source)
    arrays = evaluate_boxes(gt.boxes, results, num_images=len(gt.image_ids), num_classes=gt.num_classes)
    return metrics_from_arrays(arrays, gt.class_names)


__all__ = ["CocoGroundTruth", "CocoMetrics", "STAT_NAMES", "coco_detection_boxes", "coco_ground_truth",
           "coco_ground_truth_from_json", "evaluate_coco", "metrics_from_arrays", "read_coco_ground_truth",
           "select_categories"]
