"""Precision-recall curve plots: one PNG per class and one for all classes together.

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
