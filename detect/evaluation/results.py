"""Detection results files: COCO results JSON and the ILSVRC DET devkit's submission text.

Inside, detections are ``{image_id: Detections}`` with xyxy float32 boxes and labels ``1..K``; this file
is the edge where they meet the files' conventions:

* COCO results JSON (the format of ``COCO.loadRes`` and the COCO evaluation server): a list of
  ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``; ``category_id`` is the data set's own id
  (:attr:`DetectionDataset.category_ids`: COCO category ids, ILSVRC wnids, VOC class names) and
  ``image_id`` the data set's own image id.
* ILSVRC DET submission (devkit ``evaluation/eval_detection.m`` and its readme): one line per detection,
  ``<image_index> <ILSVRC2014_DET_ID> <confidence> <xmin> <ymin> <xmax> <ymax>``, where ``image_index``
  is the 1-based index of the image in the image-set file (``val.txt``: ``name index``), the DET id is the
  1-based class index in the devkit's 200-class order (our label ``k``), and the box is in the devkit's
  1-based inclusive pixel coordinates: ``(x1 + 1, y1 + 1, x2, y2)`` of our xyxy box, rounded to whole
  pixels (the devkit reads them with ``%f``, so whole numbers are always accepted).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from backbone.errors import InputError, short_repr
from backbone.safeio import load_json, read_bytes

if TYPE_CHECKING:  # torch is imported where tensors are made: checking a COCO results file needs none
    from detect.datasets import DetectionDataset
    from detect.evaluation.coco import CocoGroundTruth
    from detect.structures import Detections

DetectionsByImage = Mapping[Any, "Detections"]

_RESULT_FIELDS = ("image_id", "category_id", "bbox", "score")

#: Largest ILSVRC submission text read (the devkit's val set at 100 detections per image is ~100 MB).
MAX_SUBMISSION_BYTES = 1 << 30


def _is_id(value: Any) -> bool:
    """An id is an int (not a bool) or a string."""
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _check_image_ids(dets_by_image: DetectionsByImage, dataset: DetectionDataset) -> None:
    known = {r.image_id for r in dataset.records}
    unknown = [i for i in dets_by_image if i not in known]
    if unknown:
        raise ValueError(f"detections for {len(unknown)} images not in the data set {dataset.source} "
                         f"(first: {unknown[0]!r})")


def _check_labels(dets: Detections, num_classes: int, image_id: Any) -> None:
    if len(dets) and (int(dets.labels.min()) < 1 or int(dets.labels.max()) > num_classes):
        raise ValueError(f"image {image_id!r}: labels must be 1..{num_classes}, got "
                         f"{int(dets.labels.min())}..{int(dets.labels.max())}")


def coco_rows(image_id: Any, dets: Detections, category_ids: Sequence[Any], *, file_name: str | None = None,
              rounded: bool = False) -> list[dict]:
    """One image's detections as COCO results rows: the one COCO writer (``detect run``, ``detect eval
    --weights``, training validation).

    Args:
        image_id: the id written for this image.
        dets: labels ``1..K``, boxes xyxy pixels.
        category_ids: the category id of each label (``category_ids[label - 1]``).
        file_name: written as ``"file_name"`` when given (``detect run``: so that ``detect eval --results``
            can match an image by name when its id is an index, see :func:`check_coco_results`).
        rounded: boxes to 0.01 px and scores to 1e-5 (``detect run``'s files), else the float32 values.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"(, "file_name")}, ...]`` in detection order.
    """
    from torchvision.ops import box_convert

    if not len(dets):
        return []
    _check_labels(dets, len(category_ids), image_id)
    xywh = box_convert(dets.boxes.float(), "xyxy", "xywh").tolist()
    rows = []
    for box, score, label in zip(xywh, dets.scores.tolist(), dets.labels.tolist()):
        row = {"image_id": image_id, "category_id": category_ids[label - 1],
               "bbox": [round(v, 2) for v in box] if rounded else box, "score": round(score, 5) if rounded else score}
        if file_name is not None:
            row["file_name"] = file_name
        rows.append(row)
    return rows


def to_coco_results(dets_by_image: DetectionsByImage, dataset: DetectionDataset) -> list[dict]:
    """Detections as a COCO results list (xywh boxes, the data set's own category and image ids).

    Args:
        dets_by_image: ``{image_id: Detections}``; ids must be the data set's, labels ``1..K``.
        dataset: gives the category id of each label.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` in image then detection order
        (:func:`coco_rows` of each image).
    """
    _check_image_ids(dets_by_image, dataset)
    return [row for image_id, dets in dets_by_image.items() for row in coco_rows(image_id, dets, dataset.category_ids)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ground_truth_ids(ground: DetectionDataset | CocoGroundTruth) -> tuple[list, list, dict[Any, str]]:
    """(image ids, category ids, image id -> file name) of a data set or a :class:`CocoGroundTruth`."""
    if hasattr(ground, "records"):
        return ([r.image_id for r in ground.records], list(ground.category_ids),
                {r.image_id: str(r.file) for r in ground.records})
    return list(ground.image_ids), list(ground.category_ids), dict(ground.file_names)


def check_coco_results(results: Any, dataset: DetectionDataset | CocoGroundTruth,
                       path: str | os.PathLike | None = None) -> list[dict]:
    """Check a COCO results list against ``dataset`` (or a :class:`CocoGroundTruth`); return it.

    An entry whose ``image_id`` the data set does not have but whose ``file_name`` (as ``detect run``
    writes it) names one of its images by stem is given that image's id (replaced in the list).

    Types are strict: ids are integers or strings (``true`` is not image 1), scores and box values are
    numbers (not booleans), a ``file_name`` is a string.

    Raises:
        InputError: (naming ``path``) not a list, an entry without one of image_id/category_id/bbox/score,
            an id that is not an integer or a string, a ``file_name`` that is not a string, a bbox that is
            not 4 finite numbers with non-negative width and height, a NaN, infinite or boolean score, an
            image id or category id the data set does not have.
    """
    if not isinstance(results, list):
        raise InputError(path, f"expected a JSON list of detections, got {type(results).__name__}")
    image_ids, category_ids, files = _ground_truth_ids(dataset)
    images = set(image_ids)
    by_stem: dict[str, Any] | None = None
    cats = set(category_ids)
    for i, det in enumerate(results):
        if not isinstance(det, dict):
            raise InputError(path, f"entry {i} is {type(det).__name__}, expected an object")
        for name in _RESULT_FIELDS:
            if name not in det:
                raise InputError(path, f"entry {i} has no '{name}' field")
        for name in ("image_id", "category_id"):
            if not _is_id(det[name]):
                raise InputError(path, f"entry {i} has {name} {short_repr(det[name])}, a {type(det[name]).__name__}; "
                                       "expected an integer or a string")
        if "file_name" in det and not isinstance(det["file_name"], str):
            raise InputError(path, f"entry {i} has file_name {short_repr(det['file_name'])}, expected a string")
        if det["image_id"] not in images and isinstance(det.get("file_name"), str):
            if by_stem is None:
                by_stem = {Path(f).stem: i for i, f in files.items()}
            if Path(det["file_name"]).stem in by_stem:  # `detect run` numbers non-COCO images 1..N
                det = results[i] = {**det, "image_id": by_stem[Path(det["file_name"]).stem]}
        if det["image_id"] not in images:
            raise InputError(path, f"entry {i} has image_id {short_repr(det['image_id'])}, which the ground truth "
                                   "does not have")
        if det["category_id"] not in cats:
            raise InputError(path, f"entry {i} has category_id {short_repr(det['category_id'])}, which the ground "
                                   "truth does not have")
        if not _finite(det["score"]):
            raise InputError(path, f"entry {i} has score {short_repr(det['score'])}, expected a finite number")
        bbox = det["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            raise InputError(path, f"entry {i} has bbox {short_repr(bbox)}, expected [x, y, w, h] finite numbers")
        if bbox[2] < 0 or bbox[3] < 0:
            raise InputError(path, f"entry {i} has bbox {short_repr(bbox)} with negative width or height")
    return results


def load_coco_results(path: str | os.PathLike, dataset: DetectionDataset) -> list[dict]:
    """Read and check a COCO results JSON file (see :func:`check_coco_results`)."""
    p = Path(path)
    data = load_json(p)  # bounded (backbone.safeio); NaN/Infinity parse here and are refused by the check
    return check_coco_results(data, dataset, p)


def results_to_detections(results: list[dict], dataset: DetectionDataset) -> dict[Any, Detections]:
    """A checked COCO results list back to ``{image_id: Detections}`` (xyxy, labels ``1..K``, sorted by score).

    Every image of ``dataset`` gets an entry (empty where it has no detections).
    """
    import torch
    from torchvision.ops import box_convert

    from detect.structures import Detections

    label_of = {c: k + 1 for k, c in enumerate(dataset.category_ids)}
    grouped: dict[Any, tuple[list, list, list]] = {r.image_id: ([], [], []) for r in dataset.records}
    for det in results:
        boxes, scores, labels = grouped[det["image_id"]]
        boxes.append(det["bbox"])
        scores.append(det["score"])
        labels.append(label_of[det["category_id"]])
    out = {}
    for image_id, (boxes, scores, labels) in grouped.items():
        b = box_convert(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy")
        s = torch.tensor(scores, dtype=torch.float32).reshape(-1)
        order = torch.argsort(s, descending=True, stable=True)
        out[image_id] = Detections(b[order], s[order], torch.tensor(labels, dtype=torch.int64).reshape(-1)[order])
    return out


def to_ilsvrc_submission(dets_by_image: DetectionsByImage, dataset: DetectionDataset) -> str:
    """Detections in the ILSVRC DET devkit's submission format (see the module docstring).

    Args:
        dets_by_image: ``{image_id: Detections}`` with labels ``1..200`` in the devkit's class order.
        dataset: an ILSVRC data set (gives each image's index: the image-set file's, else position + 1).

    Returns:
        The file's text, lines sorted by image index, then by decreasing confidence.
    """
    if dataset.kind != "ilsvrc":
        raise ValueError(f"the ILSVRC submission format needs an ILSVRC data set, got kind {dataset.kind!r}")
    _check_image_ids(dets_by_image, dataset)
    index = {r.image_id: dataset.image_index.get(r.image_id, pos + 1) for pos, r in enumerate(dataset.records)}
    return "".join(ilsvrc_lines(index[image_id], dets_by_image[image_id], dataset.num_classes, image_id=image_id)
                   for image_id in sorted(dets_by_image, key=index.__getitem__))


def ilsvrc_lines(image_index: int, dets: Detections, num_classes: int, *, image_id: Any = None) -> str:
    """One image's detections in the devkit's submission format: the one ILSVRC writer (``detect run``, ``detect
    eval --weights``), where the devkit's +1 pixel rule lives (see the module docstring).

    Args:
        image_index: the image's 1-based devkit index (the image-set file's, else its position + 1).
        dets: labels ``1..num_classes`` in the devkit's class order, boxes xyxy pixels.
        num_classes: 200 for ILSVRC DET.
        image_id: named in the error for a bad label (default: ``image_index``).

    Returns:
        Lines ``<image_index> <label> <confidence> <xmin> <ymin> <xmax> <ymax>\\n`` by decreasing confidence.
    """
    import torch

    if not len(dets):
        return ""
    _check_labels(dets, num_classes, image_index if image_id is None else image_id)
    order = torch.argsort(dets.scores, descending=True, stable=True)
    one_based = torch.round(dets.boxes[order].double()) + torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    one_based[:, 2:] = torch.maximum(one_based[:, 2:], one_based[:, :2])  # a sub-pixel box stays 1 px wide
    return "".join(f"{image_index} {label} {score:.6g} {x1} {y1} {x2} {y2}\n"
                   for (x1, y1, x2, y2), score, label in zip(one_based.long().tolist(), dets.scores[order].tolist(),
                                                             dets.labels[order].tolist()))


def load_ilsvrc_submission(path: str | os.PathLike, dataset: DetectionDataset) -> dict[Any, Detections]:
    """Read a devkit submission file (see the module docstring) as ``{image_id: Detections}``.

    Boxes go from 1-based inclusive ``(xmin, ymin, xmax, ymax)`` to ``(xmin - 1, ymin - 1, xmax, ymax)``, the
    inverse of :func:`to_ilsvrc_submission`. Every image of ``dataset`` gets an entry.

    Raises:
        InputError: (naming ``path``) unreadable, a line without 7 numbers, a NaN/infinite value, an image
            index or class index the data set does not have.
    """
    import torch

    from detect.structures import Detections

    p = Path(path)
    try:
        lines = read_bytes(p, max_bytes=MAX_SUBMISSION_BYTES, what="ILSVRC submission").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(p, "cannot read ILSVRC submission (not UTF-8 text)") from None
    by_index = {dataset.image_index.get(r.image_id, pos + 1): r.image_id for pos, r in enumerate(dataset.records)}
    grouped: dict[Any, list[list[float]]] = {r.image_id: [] for r in dataset.records}
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 7 or not all(math.isfinite(v) for v in values):
            raise InputError(p, f"line {lineno}: expected '<image_index> <class 1..{dataset.num_classes}> "
                                f"<confidence> <xmin> <ymin> <xmax> <ymax>' numbers, got {line.strip()!r}")
        index, label = int(values[0]), int(values[1])
        if index not in by_index:
            raise InputError(p, f"line {lineno}: image index {index} is not in the ground truth")
        if not 1 <= label <= dataset.num_classes or label != values[1]:
            raise InputError(p, f"line {lineno}: class {parts[1]} is not in 1..{dataset.num_classes}")
        grouped[by_index[index]].append(values[1:])
    out = {}
    for image_id, rows in grouped.items():
        t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)
        order = torch.argsort(t[:, 1], descending=True, stable=True)
        t = t[order]
        boxes = (t[:, 2:] - torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)).float()
        out[image_id] = Detections(boxes, t[:, 1].float(), t[:, 0].long())
    return out
