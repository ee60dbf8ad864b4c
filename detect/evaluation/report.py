"""Human- and machine-readable evaluation reports: the per-class AP table and ``summary.json``."""

from __future__ import annotations

import os
from typing import Any

from backbone.files import write_json
from detect.evaluation.coco import CocoMetrics
from detect.evaluation.ilsvrc import IlsvrcMetrics

Metrics = CocoMetrics | IlsvrcMetrics


def _pct(value: float) -> str:
    return "    -" if value < 0 else f"{100 * value:5.1f}"


def format_metrics(metrics: Metrics) -> str:
    """The named summary values, one per line, in percent (``-`` where undefined)."""
    return "\n".join(f"{name:>6} {_pct(value)}" for name, value in metrics.stats().items())


def format_per_class_table(metrics: Metrics, *, columns: int = 3) -> str:
    """Per-class AP in percent as a fixed-width table, ``columns`` classes per row (``-``: no ground truth)."""
    items = list(metrics.per_class_AP.items())
    if not items:
        return "(no classes)"
    width = max(len(name) for name, _ in items)
    cells = [f"{name:<{width}} {_pct(ap)}" for name, ap in items]
    header = "  ".join([f"{'class':<{width}}    AP"] * min(columns, len(cells)))
    rows = ["  ".join(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return "\n".join([header, *rows])


def summary_dict(metrics: Metrics, **context: Any) -> dict:
    """What ``summary.json`` holds: ``context`` (paths, counts), the metric kind, named values, per-class AP."""
    kind = "coco" if isinstance(metrics, CocoMetrics) else "ilsvrc"
    out = {**context, "metric": kind, "metrics": metrics.stats(), "per_class_AP": dict(metrics.per_class_AP)}
    if isinstance(metrics, IlsvrcMetrics):
        out["num_ground_truth"] = dict(metrics.num_ground_truth)
    return out


def write_summary(path: str | os.PathLike, metrics: Metrics, *, inputs: tuple = (), **context: Any) -> None:
    """Atomically write :func:`summary_dict` as indented JSON to ``path`` (never over one of ``inputs``)."""
    write_json(path, summary_dict(metrics, **context), indent=2, inputs=inputs)
