"""ILSVRC DET evaluation: the rule of the ILSVRC 2013/2014 DET devkit (``eval_detection.m``).

Paper section 8 reports mean average precision on ILSVRC14 DET (43.9% for the 6-model ensemble); this is
the devkit's measure:

* A detection of class c matches a ground-truth box of class c of size w x h (devkit widths,
  ``w = xmax - xmin + 1``) when IoU >= ``min(0.5, w * h / ((w + 10) * (h + 10)))``: small objects get a
  looser threshold. IoU uses the devkit's ``+1`` pixel convention; this module is the only place it
  exists. Our boxes ``(x1, y1, x2, y2)`` are turned back into the devkit's 1-based inclusive coordinates
  ``(x1 + 1, y1 + 1, x2, y2)`` first (the inverse of :func:`detect.datasets.read_voc_xml`'s conversion),
  so the numbers equal the devkit's on the original XML coordinates.
* Per image, detections are taken in decreasing confidence; each takes, among the not yet matched ground
  truths of its class that pass their threshold, the one with the highest IoU (true positive); a
  detection that finds none is a false positive, duplicates included.
* Per class, all detections are sorted by decreasing confidence (stable), and AP is the VOC area under the
  monotone precision envelope at every recall step (``VOCap``: all points, not the 11-point rule).
  A class without ground truth has AP -1 and is left out of the mean.

Deviations: ground truth marked ``ignore`` (VOC ``difficult``; ILSVRC has none) is handled as VOC does:
it counts in neither recall nor false positives.

Blacklist: the devkit skips, per class, a few validation images whose labels are ambiguous
(``data/ILSVRC2014_det_validation_blacklist.txt``, lines ``<image_index> <wnid>``, read by
:func:`read_blacklist`): for a listed (image, class) pair, that class's ground truth and detections in that
image are left out. This follows the devkit readme ("blacklisted (for this category only) and
automatically skipped by the evaluation script"); the file's format is from our reading of
``eval_detection.m`` (``textread(blacklist_file, '%d %s')``), not checked against the original file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Mapping

import numba
import numpy as np

from backbone.errors import InputError

if TYPE_CHECKING:
    from detect.datasets import DetectionDataset
    from detect.structures import Detections

log = logging.getLogger(__name__)

#: The devkit's default IoU threshold and its pixel tolerance for small objects.
DEFAULT_IOU = 0.5
PIXEL_TOLERANCE = 10.0
#: Largest blacklist file read (the devkit's has ~1,000 lines, 20 KB).
MAX_BLACKLIST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class IlsvrcMetrics:
    """ILSVRC DET metrics, as fractions in [0, 1].

    Attributes:
        mAP: mean of ``per_class_AP`` over classes with ground truth (-1 when none has any).
        per_class_AP: class name -> AP, -1 for a class without ground truth.
        num_ground_truth: class name -> number of (non-ignored) ground-truth boxes.
        num_detections: class name -> number of detections (blacklisted ones left out).
        curves: class name -> ``(recall[D], precision[D])`` at each of its D detections, for plots.
    """

    mAP: float
    per_class_AP: dict[str, float]
    num_ground_truth: dict[str, int] = field(default_factory=dict)
    num_detections: dict[str, int] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def stats(self) -> dict[str, float]:
        """The named summary values."""
        return {"mAP": self.mAP}

    def pr_curves(self) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
        """Curves for :mod:`detect.evaluation.plots`: one ``("IoU devkit", recall, precision)`` per class."""
        return {name: [("devkit rule", rec, prec)] for name, (rec, prec) in self.curves.items()
                if self.num_ground_truth.get(name, 0) > 0}


def select_classes(metrics: IlsvrcMetrics, names: Collection[str]) -> IlsvrcMetrics:
    """``metrics`` of the classes ``names`` only (``detect eval --classes``): mAP over those that have ground
    truth (the devkit's per-class APs do not depend on other classes)."""
    keep = [n for n in metrics.per_class_AP if n in set(names)]
    per_class = {n: metrics.per_class_AP[n] for n in keep}
    defined = [ap for ap in per_class.values() if ap >= 0]
    return IlsvrcMetrics(mAP=float(np.mean(defined)) if defined else -1.0, per_class_AP=per_class,
                         num_ground_truth={n: metrics.num_ground_truth[n] for n in keep},
                         num_detections={n: metrics.num_detections[n] for n in keep},
                         curves={n: c for n, c in metrics.curves.items() if n in per_class})


def devkit_iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU with the devkit's ``+1`` convention.

    Args:
        dets: ``[D, 4]`` and gts: ``[G, 4]`` in 1-based inclusive ``(xmin, ymin, xmax, ymax)``.

    Returns:
        ``[D, G]`` IoU, 0 where boxes do not overlap (the devkit's ``iw > 0 & ih > 0``).
    """
    iw = np.minimum(dets[:, None, 2], gts[None, :, 2]) - np.maximum(dets[:, None, 0], gts[None, :, 0]) + 1
    ih = np.minimum(dets[:, None, 3], gts[None, :, 3]) - np.maximum(dets[:, None, 1], gts[None, :, 1]) + 1
    inter = iw * ih
    area_d = (dets[:, 2] - dets[:, 0] + 1) * (dets[:, 3] - dets[:, 1] + 1)
    area_g = (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_d[:, None] + area_g[None, :] - inter)
    return np.where((iw > 0) & (ih > 0), iou, 0.0)


def devkit_threshold(gts: np.ndarray) -> np.ndarray:
    """Per ground-truth IoU threshold ``min(0.5, w h / ((w + 10)(h + 10)))``, widths with ``+1``.

    Args:
        gts: ``[G, 4]`` 1-based inclusive ``(xmin, ymin, xmax, ymax)``.
    """
    w = gts[:, 2] - gts[:, 0] + 1
    h = gts[:, 3] - gts[:, 1] + 1
    return np.minimum(DEFAULT_IOU, (w * h) / ((w + PIXEL_TOLERANCE) * (h + PIXEL_TOLERANCE)))


def _to_devkit(boxes: np.ndarray) -> np.ndarray:
    """Our xyxy (no +1) -> the devkit's 1-based inclusive coordinates."""
    return boxes.astype(np.float64) + np.array([1.0, 1.0, 0.0, 0.0])


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC's ``VOCap``: area under the monotone precision envelope, summed at every recall change."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def match_image(dets: Detections, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                gt_ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's greedy matching in one image, readable (the evaluator runs :func:`_match_all`, the same
    rule compiled over all images at once; a test holds them equal).

    Args:
        dets: detections (xyxy, any order); gt_boxes: ``[G, 4]`` xyxy; gt_labels: ``[G]``; gt_ignore: ``[G]``.

    Returns:
        ``(tp[D], fp[D])`` float arrays in the order of ``dets`` (both 0 for a match to an ignored box).
    """
    n = len(dets)
    tp, fp = np.zeros(n), np.zeros(n)
    if n == 0:
        return tp, fp
    scores = dets.scores.double().numpy()
    labels = dets.labels.numpy()
    order = np.argsort(-scores, kind="stable")
    if len(gt_boxes) == 0:
        fp[:] = 1.0
        return tp, fp
    g = _to_devkit(gt_boxes)
    iou = devkit_iou(_to_devkit(dets.boxes.double().numpy()), g)
    thr = devkit_threshold(g)
    candidate = (labels[:, None] == gt_labels[None, :]) & (iou >= thr[None, :])  # [D, G] before greediness
    fp[:] = 1.0
    detected = np.zeros(len(g), dtype=bool)
    for j in order[candidate[order].any(axis=1)]:  # detections that can match at all, by decreasing score
        ok = candidate[j] & ~detected
        if ok.any():
            k = int(np.argmax(np.where(ok, iou[j], -1.0)))
            detected[k] = True
            fp[j] = 0.0
            tp[j] = 0.0 if gt_ignore[k] else 1.0
    return tp, fp


def read_blacklist(path: str | os.PathLike, dataset: DetectionDataset) -> set[tuple[Any, int]]:
    """Read the devkit's blacklist (``<image_index> <wnid>`` per line) as ``{(image_id, label)}``.

    Image indices are the data set's devkit indices (:attr:`DetectionDataset.image_index`, else position
    + 1); pairs naming an image the data set does not have are skipped (a subset was evaluated).

    Raises:
        InputError: unreadable file, a malformed line, or a wnid that is not one of the data set's classes.
    """
    from backbone.safeio import read_bytes

    p = Path(path)
    try:
        lines = read_bytes(p, max_bytes=MAX_BLACKLIST_BYTES, what="blacklist").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(p, "cannot read blacklist (not UTF-8 text)") from None
    by_index = {dataset.image_index.get(r.image_id, pos + 1): r.image_id for pos, r in enumerate(dataset.records)}
    label_of = {c: k + 1 for k, c in enumerate(dataset.category_ids)}
    pairs = set()
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise InputError(p, f"line {lineno}: expected '<image index> <wnid>', got {line.strip()!r}")
        if parts[1] not in label_of:
            raise InputError(p, f"line {lineno}: '{parts[1]}' is not one of the {len(label_of)} classes")
        if int(parts[0]) in by_index:
            pairs.add((by_index[int(parts[0])], label_of[parts[1]]))
    return pairs


@numba.njit(cache=True)
def _match_all(g_start, g_end, d_start, d_end, g_box, g_label, g_ignore, d_box, d_label,
               tp, fp):  # pragma: no cover - compiled
    """:func:`match_image` for every image: detections of image ``n`` are ``d_start[n]:d_end[n]`` sorted by
    decreasing score (stable), its ground truth ``g_start[n]:g_end[n]``; boxes in devkit coordinates."""
    for n in range(g_start.shape[0]):
        gs, ge = g_start[n], g_end[n]
        ng = ge - gs
        detected = np.zeros(ng, np.bool_)
        thr = np.empty(ng)
        area_g = np.empty(ng)
        for j in range(ng):
            w = g_box[gs + j, 2] - g_box[gs + j, 0] + 1
            h = g_box[gs + j, 3] - g_box[gs + j, 1] + 1
            thr[j] = min(DEFAULT_IOU, (w * h) / ((w + PIXEL_TOLERANCE) * (h + PIXEL_TOLERANCE)))
            area_g[j] = w * h
        for d in range(d_start[n], d_end[n]):
            fp[d] = 1.0
            area_d = (d_box[d, 2] - d_box[d, 0] + 1) * (d_box[d, 3] - d_box[d, 1] + 1)
            best = -1.0
            k = -1
            for j in range(ng):
                if detected[j] or g_label[gs + j] != d_label[d]:
                    continue
                iw = min(d_box[d, 2], g_box[gs + j, 2]) - max(d_box[d, 0], g_box[gs + j, 0]) + 1
                ih = min(d_box[d, 3], g_box[gs + j, 3]) - max(d_box[d, 1], g_box[gs + j, 1]) + 1
                if iw <= 0 or ih <= 0:
                    continue
                inter = iw * ih
                iou = inter / (area_d + area_g[j] - inter)
                if iou >= thr[j] and iou > best:
                    best = iou
                    k = j
            if k >= 0:
                detected[k] = True
                fp[d] = 0.0
                tp[d] = 0.0 if g_ignore[gs + k] else 1.0


def _detection_arrays(dataset: DetectionDataset, dets_by_image: Mapping[Any, Detections]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image position, label, boxes ``[D, 4]`` float64 xyxy, scores float64) in record then listing order."""
    images, labels, boxes, scores = [], [], [], []
    k_classes = dataset.num_classes
    for pos, rec in enumerate(dataset.records):
        dets = dets_by_image.get(rec.image_id)
        if dets is None or len(dets) == 0:
            continue
        lab = dets.labels.numpy()
        if int(lab.min()) < 1 or int(lab.max()) > k_classes:
            raise ValueError(f"image {rec.image_id!r}: detection labels must be 1..{k_classes}")
        images.append(np.full(len(lab), pos, dtype=np.int64))
        labels.append(lab.astype(np.int64))
        boxes.append(dets.boxes.numpy().astype(np.float64).reshape(-1, 4))
        scores.append(dets.scores.numpy().astype(np.float64))
    if not images:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
    return np.concatenate(images), np.concatenate(labels), np.concatenate(boxes), np.concatenate(scores)


def evaluate_ilsvrc(dataset: DetectionDataset, dets_by_image: Mapping[Any, Detections], *,
                    blacklist: Collection[tuple[Any, int]] = ()) -> IlsvrcMetrics:
    """ILSVRC DET AP per class and mAP (the devkit's rule; see the module docstring).

    Args:
        dataset: ground truth (any kind; the rule is ILSVRC's).
        dets_by_image: ``{image_id: Detections}`` with the data set's ids and labels ``1..K``; images
            missing from it have no detections. Ids the data set does not have are an error.
        blacklist: ``(image_id, label)`` pairs to leave out (:func:`read_blacklist`).

    Returns:
        :class:`IlsvrcMetrics`.
    """
    known = {r.image_id for r in dataset.records}
    unknown = [i for i in dets_by_image if i not in known]
    if unknown:
        raise ValueError(f"detections for {len(unknown)} images not in {dataset.source} (first: {unknown[0]!r})")
    k_classes = dataset.num_classes
    n_images = len(dataset.records)
    # ground truth as arrays, record order
    g_img = np.concatenate([np.full(len(r.labels), pos, np.int64) for pos, r in enumerate(dataset.records)]
                           + [np.zeros(0, np.int64)])
    g_lab = np.concatenate([r.labels.numpy() for r in dataset.records] + [np.zeros(0, np.int64)]).astype(np.int64)
    g_ign = np.concatenate([r.ignore.numpy() for r in dataset.records] + [np.zeros(0, bool)]).astype(bool)
    g_box = np.concatenate([r.boxes.numpy().reshape(-1, 4) for r in dataset.records]
                           + [np.zeros((0, 4), np.float32)]).astype(np.float64)
    d_img, d_lab, d_box, d_score = _detection_arrays(dataset, dets_by_image)
    if blacklist:  # leave out that class's ground truth and detections in that image
        pos_of = {r.image_id: pos for pos, r in enumerate(dataset.records)}
        pairs = np.array(sorted({pos_of[i] * (k_classes + 1) + int(label) for i, label in blacklist if i in pos_of}),
                         dtype=np.int64)
        g_keep = ~np.isin(g_img * (k_classes + 1) + g_lab, pairs)
        d_keep = ~np.isin(d_img * (k_classes + 1) + d_lab, pairs)
        g_img, g_lab, g_ign, g_box = g_img[g_keep], g_lab[g_keep], g_ign[g_keep], g_box[g_keep]
        d_img, d_lab, d_box, d_score = d_img[d_keep], d_lab[d_keep], d_box[d_keep], d_score[d_keep]
    npos = np.bincount(g_lab[~g_ign], minlength=k_classes + 1)
    # per image, detections by decreasing score (stable); ground truth in listing order
    order = np.argsort(-d_score, kind="stable")
    order = order[np.argsort(d_img[order], kind="stable")]
    images = np.arange(n_images)
    g_start, g_end = np.searchsorted(g_img, images, "left"), np.searchsorted(g_img, images, "right")
    d_sorted = d_img[order]
    d_start, d_end = np.searchsorted(d_sorted, images, "left"), np.searchsorted(d_sorted, images, "right")
    tp_o, fp_o = np.zeros(len(order)), np.zeros(len(order))
    _match_all(g_start, g_end, d_start, d_end, _to_devkit(g_box), g_lab, g_ign,
               np.ascontiguousarray(_to_devkit(d_box[order])), d_lab[order], tp_o, fp_o)
    tp_all, fp_all = np.empty_like(tp_o), np.empty_like(fp_o)
    tp_all[order], fp_all[order] = tp_o, fp_o  # back to record then listing order
    # per class, all detections by decreasing score (stable over record then listing order)
    order = np.argsort(-d_score, kind="stable")
    order = order[np.argsort(d_lab[order], kind="stable")]
    c_start = np.searchsorted(d_lab[order], np.arange(1, k_classes + 1), "left")
    c_end = np.searchsorted(d_lab[order], np.arange(1, k_classes + 1), "right")
    per_class, num_gt, num_dets, curves = {}, {}, {}, {}
    for k, name in enumerate(dataset.class_names, start=1):
        sel = order[c_start[k - 1]:c_end[k - 1]]
        num_gt[name] = int(npos[k])
        num_dets[name] = int(len(sel))
        if npos[k] == 0:
            per_class[name] = -1.0
            continue
        tp = np.cumsum(tp_all[sel])
        fp = np.cumsum(fp_all[sel])
        recall = tp / npos[k]
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[name] = voc_ap(recall, precision)
        curves[name] = (recall, precision)
    defined = [ap for ap in per_class.values() if ap >= 0]
    m_ap = float(np.mean(defined)) if defined else -1.0
    return IlsvrcMetrics(mAP=m_ap, per_class_AP=per_class, num_ground_truth=num_gt, num_detections=num_dets,
                         curves=curves)
