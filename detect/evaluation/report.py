"""Human- and machine-readable evaluation reports: the named metrics, the per-class table, ``summary.json``,
and the check that a results file still holds its low-score tail."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from backbone.files import write_json

if TYPE_CHECKING:
    from detect.evaluation.coco import CocoMetrics
    from detect.evaluation.ilsvrc import IlsvrcMetrics

    Metrics = CocoMetrics | IlsvrcMetrics

#: The cut-results rule (:func:`cut_results_warning`): the lowest score at or above this ...
CUT_MIN_SCORE = 0.1
#: ... while at least this share of the images has fewer than ``max_dets`` detections.
CUT_IMAGE_SHARE = 0.5


def _value(value: float) -> str:
    return "-1 (undefined: no ground truth)" if value < 0 else f"{value:.4f}"


def format_metrics(metrics: Metrics) -> str:
    """The named summary values as fractions, one ``NAME VALUE`` per line, names as in ``summary.json``."""
    stats = metrics.stats()
    width = max(len(name) for name in stats)
    return "\n".join(f"{name:<{width}}  {_value(value)}" for name, value in stats.items())


def per_class_rows(metrics: Metrics) -> list[dict[str, Any]]:
    """One dict per class: ``class``, ``AP``, ``AP50`` (COCO only), ``gt`` (regular ground-truth boxes),
    ``dets`` (detections); sorted by AP descending, classes without ground truth (AP -1) last, ties by name."""
    ap50 = metrics.per_class_AP50() if hasattr(metrics, "per_class_AP50") else None
    gt, dets = metrics.num_ground_truth, getattr(metrics, "num_detections", {})
    rows = []
    for name, ap in metrics.per_class_AP.items():
        row = {"class": name, "AP": ap}
        if ap50 is not None:
            row["AP50"] = ap50[name]
        row["gt"] = int(gt.get(name, 0))
        row["dets"] = int(dets.get(name, 0))
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["AP"], r["class"]))


def format_per_class_table(metrics: Metrics) -> str:
    """:func:`per_class_rows` as a fixed-width table (AP values as fractions, ``-`` without ground truth)."""
    rows = per_class_rows(metrics)
    if not rows:
        return "(no classes)"
    width = max(5, *(len(r["class"]) for r in rows))
    ap_cols = [c for c in ("AP", "AP50") if c in rows[0]]
    header = f"{'class':<{width}}" + "".join(f"  {c:>6}" for c in ap_cols) + f"  {'gt':>7}  {'dets':>8}"
    lines = [header]
    for r in rows:
        cells = "".join(f"  {'-' if r[c] < 0 else format(r[c], '.4f'):>6}" for c in ap_cols)
        lines.append(f"{r['class']:<{width}}{cells}  {r['gt']:>7}  {r['dets']:>8}")
    return "\n".join(lines)


def cut_results_warning(scores: np.ndarray, image_index: np.ndarray, num_images: int, *, max_dets: int = 100,
                        min_score: float = CUT_MIN_SCORE, share: float = CUT_IMAGE_SHARE) -> str | None:
    """A one-line warning when a results file looks cut at a high score, else None.

    The rule: the lowest score is ``>= min_score`` (0.1) and at least ``share`` (half) of the images have
    fewer than ``max_dets`` (100, COCO's cap) detections. A file that keeps every detection above a usual
    evaluation threshold (0.001 to 0.05) has its lowest score below 0.1, unless its images are filled up
    to the cap, in which case the cap and not a score threshold cut it, which is what COCO's AP expects.
    An empty file gives no warning (there is no score to judge).

    Args:
        scores: ``[D]`` detection scores; image_index: ``[D]`` image of each, ``0..num_images-1``.
    """
    if len(scores) == 0 or num_images == 0:
        return None
    lowest = float(np.min(scores))
    per_image = np.bincount(np.asarray(image_index, dtype=np.int64), minlength=num_images)
    short = float(np.mean(per_image < max_dets))
    if lowest < min_score or short < share:
        return None
    return (f"the results look cut at a score threshold: the lowest score is {lowest:.3g} and {100 * short:.0f}% "
            f"of the images have fewer than {max_dets} detections; AP counts the low-score tail, so write "
            f"results with a low threshold (e.g. 0.001-0.05)")


def summary_dict(metrics: Metrics, **context: Any) -> dict:
    """What ``summary.json`` holds: ``context`` (paths, counts), the metric kind, named values, per-class
    AP, and the per-class table's rows."""
    kind = "ilsvrc" if hasattr(metrics, "mAP") else "coco"
    out = {**context, "metric": kind, "metrics": metrics.stats(), "per_class_AP": dict(metrics.per_class_AP)}
    if kind == "ilsvrc":
        out["num_ground_truth"] = dict(metrics.num_ground_truth)
    out["per_class"] = per_class_rows(metrics)
    return out


def write_summary(path: str | os.PathLike, metrics: Metrics, *, inputs: tuple = (), **context: Any) -> None:
    """Atomically write :func:`summary_dict` as indented JSON to ``path`` (never over one of ``inputs``)."""
    write_json(path, summary_dict(metrics, **context), indent=2, inputs=inputs)
