"""COCO box evaluation in numpy + numba: pycocotools' ``COCOeval(iouType="bbox")`` with default parameters,
number for number, without its per-image Python dictionaries.

The rules, each as ``pycocotools/cocoeval.py`` (2.0.x) applies them:

* Ground truth and detections are grouped by (image, category). In a group, detections are sorted by
  decreasing score with a stable sort (ties keep the results file's order) and cut to the last ``maxDets``
  (100); ground truth keeps the file's order, with ignored boxes moved last (stable) for each area range.
* IoU as ``maskUtils.iou`` on ``[x, y, w, h]`` boxes: ``w = min(x_d + w_d, x_g + w_g) - max(x_d, x_g)`` (0
  unless > 0, the same for h), ``inter / (area_d + area_g - inter)``, and for a crowd ground truth
  ``inter / area_d`` (the detection's own area ``w * h``).
* A ground-truth box is ignored for an area range when it is a crowd or its ``area`` field lies outside the
  range (bounds included); a detection is ignored when it matches an ignored box, or matches nothing and its
  ``w * h`` lies outside the range.
* Matching per IoU threshold ``t``, detections by decreasing score: among ground truth not yet matched
  (crowds can be matched again), the last box with the highest IoU ``>= t``; a regular box always beats an
  ignored one. A match to a ground truth whose id is 0 counts as no match (pycocotools stores the id as
  the match flag); detection ids are ``1..D`` as ``loadRes`` numbers them, so never 0.
* Accumulation per (category, area range, maxDets ``M``): the first ``M`` detections of each image, all
  images in increasing image-id order, sorted by decreasing score (stable); ``tp / npig`` and
  ``tp / (fp + tp + np.spacing(1))`` cumulated, precision made monotone from the right, read at
  ``np.searchsorted(recall, recThrs, side="left")`` (0 past the last detection); -1 where the category has
  no regular ground truth in that area range.
* ``stats``: the twelve means of ``summarize()`` over entries > -1 (-1 when none).

Everything here is arrays in, arrays out; :mod:`detect.evaluation.coco` feeds it from files and data sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

#: pycocotools' ``Params.setDetParams`` defaults, built by the same expressions (so the floats are equal).
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0 ** 2, 1e5 ** 2), (0 ** 2, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2))
AREA_LABELS = ("all", "small", "medium", "large")
_EPS = float(np.spacing(1))  # pycocotools' np.spacing(1) in the precision denominator


@dataclass(frozen=True)
class GroundTruthBoxes:
    """Ground truth as arrays, ``G`` boxes in the annotation file's order.

    Attributes:
        image: ``[G]`` int64 image index ``0..I-1``, the position of its image id in increasing id order.
        category: ``[G]`` int64 category index ``0..K-1`` (increasing category id).
        boxes: ``[G, 4]`` float64 ``(x, y, w, h)`` as in the file (not clipped).
        area: ``[G]`` float64, the file's ``area`` field (segment area for COCO).
        crowd: ``[G]`` bool, ``iscrowd``.
        zero_id: ``[G]`` bool, the annotation id is 0 (pycocotools then counts a match to it as none).
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    zero_id: np.ndarray


@dataclass(frozen=True)
class DetectionBoxes:
    """Detections as arrays, ``D`` boxes in the results file's order (its order breaks score ties).

    Attributes:
        image, category: ``[D]`` int64 indices as in :class:`GroundTruthBoxes`.
        boxes: ``[D, 4]`` float64 ``(x, y, w, h)``; area is ``w * h``.
        scores: ``[D]`` float64.
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class CocoEvalArrays:
    """pycocotools' ``COCOeval.eval`` arrays and ``stats``.

    Attributes:
        precision: ``[T=10, R=101, K, A=4, M=3]``; recall: ``[T, K, A, M]``; scores: ``[T, R, K, A, M]``.
        stats: ``[12]`` in ``COCOeval.stats`` order.
        num_ground_truth: ``[K]`` regular (non-crowd) ground-truth boxes per category.
        num_detections: ``[K]`` detections per category (all of them, before the per-image cut).
    """

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    stats: np.ndarray
    num_ground_truth: np.ndarray
    num_detections: np.ndarray


@numba.njit(cache=True)
def _match(g_start, g_end, d_start, d_end, g_box, g_area, g_crowd, g_zero, d_box, iou_thrs, area_lo, area_hi,
           matched, ignored):  # pragma: no cover - compiled
    """Greedy matching of every (image, category) group; writes ``matched``/``ignored`` ``[A, T, D]``."""
    n_thr = iou_thrs.shape[0]
    n_area = area_lo.shape[0]
    for grp in range(g_start.shape[0]):
        gs, ge, ds, de = g_start[grp], g_end[grp], d_start[grp], d_end[grp]
        ng, nd = ge - gs, de - ds
        if nd == 0:
            continue
        ious = np.zeros((nd, ng))
        for d in range(nd):
            dx, dy, dw, dh = d_box[ds + d, 0], d_box[ds + d, 1], d_box[ds + d, 2], d_box[ds + d, 3]
            da = dw * dh
            for j in range(ng):
                gx, gy, gw, gh = g_box[gs + j, 0], g_box[gs + j, 1], g_box[gs + j, 2], g_box[gs + j, 3]
                w = min(dw + dx, gw + gx) - max(dx, gx)
                if w <= 0:
                    continue
                h = min(dh + dy, gh + gy) - max(dy, gy)
                if h <= 0:
                    continue
                inter = w * h
                union = da if g_crowd[gs + j] else da + gw * gh - inter
                ious[d, j] = inter / union
        order = np.empty(ng, np.int64)
        ig = np.empty(ng, np.bool_)
        taken = np.empty(ng, np.bool_)
        for a in range(n_area):
            lo, hi = area_lo[a], area_hi[a]
            n = 0
            for j in range(ng):  # stable partition: regular boxes first, then ignored ones
                ig[j] = g_crowd[gs + j] or g_area[gs + j] < lo or g_area[gs + j] > hi
                if not ig[j]:
                    order[n] = j
                    n += 1
            for j in range(ng):
                if ig[j]:
                    order[n] = j
                    n += 1
            for t in range(n_thr):
                thr = min(iou_thrs[t], 1 - 1e-10)
                taken[:] = False
                for d in range(nd):
                    best = thr
                    m = -1
                    for jj in range(ng):
                        j = order[jj]
                        if taken[j] and not g_crowd[gs + j]:
                            continue
                        if m > -1 and not ig[m] and ig[j]:
                            break
                        if ious[d, j] < best:
                            continue
                        best = ious[d, j]
                        m = j
                    hit = False
                    ign = False
                    if m > -1:
                        taken[m] = True
                        hit = not g_zero[gs + m]
                        ign = ig[m]
                    if not hit:
                        da = d_box[ds + d, 2] * d_box[ds + d, 3]
                        if da < lo or da > hi:
                            ign = True
                    matched[a, t, ds + d] = hit
                    ignored[a, t, ds + d] = ign


@numba.njit(cache=True)
def _accumulate(c_start, c_end, perm, rank, scores, matched, ignored, npig, max_dets, rec_thrs,
                precision, recall, score_out):  # pragma: no cover - compiled
    """Precision/recall/score arrays from matches; ``perm`` lists detections in accumulation order."""
    n_thr = matched.shape[1]
    n_rec = rec_thrs.shape[0]
    eps = _EPS
    for k in range(c_start.shape[0]):
        cs, ce = c_start[k], c_end[k]
        rc = np.empty(ce - cs)
        pr = np.empty(ce - cs)
        ss = np.empty(ce - cs)
        for a in range(npig.shape[1]):
            if npig[k, a] == 0:
                continue
            for mi in range(max_dets.shape[0]):
                md = max_dets[mi]
                for t in range(n_thr):
                    tp = 0.0
                    fp = 0.0
                    nd = 0
                    for i in range(cs, ce):
                        d = perm[i]
                        if rank[d] >= md:
                            continue
                        if not ignored[a, t, d]:
                            if matched[a, t, d]:
                                tp += 1.0
                            else:
                                fp += 1.0
                        rc[nd] = tp / npig[k, a]
                        pr[nd] = tp / (fp + tp + eps)
                        ss[nd] = scores[d]
                        nd += 1
                    recall[t, k, a, mi] = rc[nd - 1] if nd else 0.0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    i = 0
                    for r in range(n_rec):  # searchsorted(rc, rec_thrs, side="left"), thresholds increasing
                        while i < nd and rc[i] < rec_thrs[r]:
                            i += 1
                        if i < nd:
                            precision[t, r, k, a, mi] = pr[i]
                            score_out[t, r, k, a, mi] = ss[i]
                        else:
                            precision[t, r, k, a, mi] = 0.0
                            score_out[t, r, k, a, mi] = 0.0


def _bounds(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.searchsorted(sorted_keys, keys, "left"), np.searchsorted(sorted_keys, keys, "right")


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """``COCOeval.summarize()``'s twelve values from the two arrays (same slicing, same ``np.mean``)."""

    def one(ap: bool, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        a = [AREA_LABELS.index(area)]
        m = [MAX_DETS.index(max_dets)]
        if ap:
            s = precision if iou is None else precision[np.where(iou == IOU_THRESHOLDS)[0]]
            s = s[:, :, :, a, m]
        else:
            s = recall if iou is None else recall[np.where(iou == IOU_THRESHOLDS)[0]]
            s = s[:, :, a, m]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    return np.array([one(True), one(True, .5), one(True, .75), one(True, area="small"),
                     one(True, area="medium"), one(True, area="large"), one(False, max_dets=1),
                     one(False, max_dets=10), one(False), one(False, area="small"), one(False, area="medium"),
                     one(False, area="large")])


def evaluate_boxes(gt: GroundTruthBoxes, dt: DetectionBoxes, *, num_images: int,
                   num_classes: int) -> CocoEvalArrays:
    """pycocotools' bbox evaluation of ``dt`` against ``gt`` on ``num_images`` images, ``num_classes``
    categories (see the module docstring for the rules).

    Returns:
        :class:`CocoEvalArrays`; with no images every value is -1, as :func:`summarize` gives.
    """
    n_img, k = max(int(num_images), 1), int(num_classes)
    n_thr, n_rec, n_area, n_max = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
    # detections: by (category, image), then decreasing score (stable), cut to max(maxDets) per group
    d_key = dt.category.astype(np.int64) * n_img + dt.image
    order = np.argsort(-dt.scores, kind="stable")
    order = order[np.argsort(d_key[order], kind="stable")]
    d_key = d_key[order]
    first = np.searchsorted(d_key, d_key, "left")
    rank = np.arange(len(order)) - first
    keep = rank < MAX_DETS[-1]
    order, d_key, rank = order[keep], d_key[keep], rank[keep]
    d_box = np.ascontiguousarray(dt.boxes[order], dtype=np.float64).reshape(-1, 4)
    d_score = np.asarray(dt.scores, dtype=np.float64)[order]
    # ground truth: by (category, image), the file's order inside
    g_key = gt.category.astype(np.int64) * n_img + gt.image
    g_order = np.argsort(g_key, kind="stable")
    g_key = g_key[g_order]
    keys = np.union1d(g_key, d_key)
    g_start, g_end = _bounds(g_key, keys)
    d_start, d_end = _bounds(d_key, keys)
    lo = np.array([r[0] for r in AREA_RANGES], dtype=np.float64)
    hi = np.array([r[1] for r in AREA_RANGES], dtype=np.float64)
    matched = np.zeros((n_area, n_thr, len(order)), dtype=np.bool_)
    ignored = np.zeros((n_area, n_thr, len(order)), dtype=np.bool_)
    g_area = np.asarray(gt.area, dtype=np.float64)[g_order]
    g_crowd = np.asarray(gt.crowd, dtype=np.bool_)[g_order]
    _match(g_start, g_end, d_start, d_end, np.ascontiguousarray(gt.boxes[g_order], dtype=np.float64).reshape(-1, 4),
           g_area, g_crowd, np.asarray(gt.zero_id, dtype=np.bool_)[g_order], d_box, IOU_THRESHOLDS, lo, hi,
           matched, ignored)
    # regular ground truth per (category, area range)
    g_cat = gt.category[g_order]
    npig = np.zeros((k, n_area), dtype=np.int64)
    for a in range(n_area):
        regular = ~g_crowd & (g_area >= lo[a]) & (g_area <= hi[a])
        npig[:, a] = np.bincount(g_cat[regular], minlength=k)[:k]
    # accumulation order: by category, decreasing score (stable over image order, then rank in image)
    d_cat = d_key // n_img
    perm = np.argsort(-d_score, kind="stable")
    perm = perm[np.argsort(d_cat[perm], kind="stable")]
    c_start, c_end = _bounds(d_cat[perm], np.arange(k))
    precision = -np.ones((n_thr, n_rec, k, n_area, n_max))
    recall = -np.ones((n_thr, k, n_area, n_max))
    scores = -np.ones((n_thr, n_rec, k, n_area, n_max))
    if num_images > 0:
        _accumulate(c_start, c_end, perm, rank, d_score, matched, ignored, npig, np.array(MAX_DETS, np.int64),
                    RECALL_THRESHOLDS, precision, recall, scores)
    return CocoEvalArrays(precision, recall, scores, summarize(precision, recall),
                          num_ground_truth=np.bincount(g_cat[~g_crowd], minlength=k)[:k],
                          num_detections=np.bincount(dt.category.astype(np.int64), minlength=k)[:k])


__all__ = ["AREA_LABELS", "AREA_RANGES", "CocoEvalArrays", "DetectionBoxes", "GroundTruthBoxes", "IOU_THRESHOLDS",
           "MAX_DETS", "RECALL_THRESHOLDS", "evaluate_boxes", "summarize"]
