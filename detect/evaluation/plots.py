"""Evaluation figures: precision-recall curves (one overview, one PNG per class) and the confusion matrix.

Matplotlib's object API on the Agg canvas (no pyplot state, no display needed); every file is written
atomically through :func:`backbone.files.atomic_path`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from backbone.files import atomic_path

Curve = tuple[str, np.ndarray, np.ndarray]  # (legend label, recall[R], precision[R])


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "class"


def plot_pr_curve(path: str | os.PathLike, title: str, curves: Sequence[Curve]) -> Path:
    """Write one PNG with the given precision-recall curves (recall on x, precision on y, both 0..1)."""
    fig = Figure(figsize=(4.5, 4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.14, 0.12, 0.82, 0.8))
    for label, recall, precision in curves:
        ax.plot(np.asarray(recall), np.clip(np.asarray(precision), 0, 1), label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left", fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def plot_pr_curves(curves: Mapping[str, Sequence[Curve]], out_dir: str | os.PathLike, *,
                   class_names: Sequence[str] | None = None) -> list[Path]:
    """One PNG per entry of ``curves`` (``metrics.pr_curves()``) under ``out_dir``.

    Files: ``pr_all.png`` for the entry ``"all"``, ``pr_<NNN>_<class>.png`` for a class, NNN being its label
    (1-based position in ``class_names``; without it, its 1-based position among the curves), so names
    stay unique and sort as the class list.

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    label = {name: k for k, name in enumerate(class_names or [n for n in curves if n != "all"], start=1)}
    written = []
    for name, entry in curves.items():
        file = out / ("pr_all.png" if name == "all" else f"pr_{label[name]:03d}_{_slug(name)}.png")
        written.append(plot_pr_curve(file, "all classes" if name == "all" else name, entry))
    return written


#: Above this many classes the overview shows the best and the worst ``OVERVIEW_CLASSES // 2`` by AP.
OVERVIEW_CLASSES = 20


def plot_pr_overview(path: str | os.PathLike, curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]], *,
                     title: str, ap_name: str = "AP", max_classes: int = OVERVIEW_CLASSES) -> Path:
    """One PNG with every class's precision-recall curve, or the best and worst ``max_classes // 2`` (by
    AP) when there are more, each labelled ``name (AP 0.xxx)``, best first.

    Args:
        curves: ``(class name, recall[R], precision[R], AP)`` per class with ground truth.
    """
    ranked = sorted(curves, key=lambda c: -c[3])
    shown = ranked if len(ranked) <= max_classes else ranked[:max_classes // 2] + ranked[-(max_classes // 2):]
    if len(shown) < len(ranked):
        title = f"{title}: best and worst {max_classes // 2} of {len(ranked)} classes"
    fig = Figure(figsize=(9, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.1, 0.55, 0.82))
    for n, (name, recall, precision, ap) in enumerate(shown):
        style = "-" if n < 10 else "--"  # matplotlib cycles 10 colours: the next ten are dashed
        ax.plot(np.asarray(recall), np.clip(np.asarray(precision), 0, 1), style, lw=1.2,
                label=f"{name} ({ap_name} {ap:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def plot_confusion_matrix(path: str | os.PathLike, counts: np.ndarray, class_names: Sequence[str], *,
                          title: str = "confusion matrix at IoU 0.5") -> Path:
    """The ``[K + 1, K + 1]`` counts of :func:`detect.evaluation.confusion.confusion_matrix` as a PNG: rows
    true class, columns predicted class, the last of each background; colour = share of its row (log scale
    would hide the diagonal), counts written in the cells when there are at most 30 classes."""
    names = [*class_names, "background"]
    n = len(names)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    size = min(max(4.0, 0.28 * n + 2.5), 40.0)
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.18, 0.18, 0.72, 0.72))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class's boxes")
    font = max(4.0, min(9.0, 300.0 / n))
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 31:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                    color="white" if share[i, j] > 0.5 else "black")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)

