"""Confusion matrix of detections at IoU 0.5, with a background row and column (numpy only).

The rule (as ultralytics' ``ConfusionMatrix``, whose plots users know): in each image, detections with a
score of at least ``min_score`` (default 0.25: the matrix describes the detections one would show, not the
low-score tail that AP needs) are paired with regular ground-truth boxes class-agnostically, greedily by
decreasing IoU, each box and each detection at most once, pairs with IoU >= ``iou`` only. A pair counts in
``[true class, predicted class]``; an unpaired ground-truth box in ``[true class, background]`` (missed); an
unpaired detection in ``[background, predicted class]`` (false alarm). Crowd boxes take part in the pairing
but count nowhere, and neither does the detection paired with one. IoU is plain ``[x, y, w, h]`` IoU, no ``+1``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from backbone.files import atomic_path
from detect.evaluation.cocoeval import DetectionBoxes, GroundTruthBoxes

DEFAULT_IOU = 0.5
DEFAULT_MIN_SCORE = 0.25


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of ``a`` ``[N, 4]`` and ``b`` ``[M, 4]`` boxes ``(x, y, w, h)``, absolute pixels."""
    w = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def confusion_matrix(gt: GroundTruthBoxes, dt: DetectionBoxes, num_classes: int, *, iou: float = DEFAULT_IOU,
                     min_score: float = DEFAULT_MIN_SCORE) -> np.ndarray:
    """Counts ``[K + 1, K + 1]`` int64: rows true class ``0..K-1`` then background, columns predicted class
    then background (see the module docstring); the background/background cell stays 0."""
    k = num_classes
    out = np.zeros((k + 1, k + 1), dtype=np.int64)
    d_sel = np.flatnonzero(dt.scores >= min_score)
    g_order = np.argsort(gt.image, kind="stable")
    d_order = d_sel[np.argsort(dt.image[d_sel], kind="stable")]
    images = np.union1d(gt.image[g_order], dt.image[d_order])
    g_lo, g_hi = np.searchsorted(gt.image[g_order], images, "left"), np.searchsorted(gt.image[g_order], images, "right")
    d_lo, d_hi = np.searchsorted(dt.image[d_order], images, "left"), np.searchsorted(dt.image[d_order], images, "right")
    for n in range(len(images)):
        g = g_order[g_lo[n]:g_hi[n]]
        d = d_order[d_lo[n]:d_hi[n]]
        crowd = gt.crowd[g]
        ious = box_iou_xywh(dt.boxes[d], gt.boxes[g])  # [D, G]
        regular = g[~crowd]
        d_used = np.zeros(len(d), bool)
        g_used = np.zeros(len(g), bool)
        cand = np.argwhere(ious >= iou)
        if len(cand):
            cand = cand[np.argsort(-ious[cand[:, 0], cand[:, 1]], kind="stable")]
            for i, j in cand:
                if d_used[i] or g_used[j]:
                    continue
                d_used[i] = g_used[j] = True
                if not crowd[j]:
                    out[gt.category[g[j]], dt.category[d[i]]] += 1
        np.add.at(out, (gt.category[regular[~g_used[~crowd]]], k), 1)
        np.add.at(out, (k, dt.category[d[~d_used]]), 1)
    return out


def write_confusion_csv(path: str | os.PathLike, counts: np.ndarray, class_names: Sequence[str]) -> Path:
    """The counts as CSV: a header ``true \\ predicted,<class>...,background``, one row per true class."""
    names = [*class_names, "background"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        for name, row in zip(names, counts.tolist()):
            writer.writerow([name, *row])
    return Path(path)


__all__ = ["DEFAULT_IOU", "DEFAULT_MIN_SCORE", "box_iou_xywh", "confusion_matrix", "write_confusion_csv"]
