"""Per-epoch training summaries beside ``log.jsonl``: ``metrics.csv`` and ``curves.png``.

What ultralytics (``results.csv``, ``results.png``) and detectron2 (``metrics.json``) users look for in a
run folder. Both files are rebuilt from the whole ``log.jsonl`` after every epoch (so a resumed run shows
the epochs before the interruption too) and written atomically (:mod:`backbone.files`).

The plot uses matplotlib's object API on the Agg canvas (no pyplot state, no display), imported only when
a plot is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

from backbone.files import atomic_path, write_bytes

log = logging.getLogger(__name__)

METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"

#: The first columns of metrics.csv, in this order; other training keys follow, validation keys last.
LEADING = ("epoch", "step", "loss", "acc", "lr", "time_s")
VAL_PREFIX = "val_"


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch records of a ``log.jsonl``, one per epoch (the last line of an epoch wins), by epoch.

    A line that is not JSON (a run killed while appending it) is skipped with a warning.
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    p = Path(path)
    if not p.exists():
        return []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: line %d is not JSON (an interrupted write?); left out of the summaries", p, number)
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def columns(records: Sequence[dict[str, Any]]) -> list[str]:
    """CSV header: :data:`LEADING` keys present, then other training keys, then ``val_*`` keys."""
    seen: list[str] = []
    for record in records:
        seen.extend(k for k in record if k not in seen)
    head = [k for k in LEADING if k in seen]
    val = [k for k in seen if k.startswith(VAL_PREFIX)]
    return head + [k for k in seen if k not in head and k not in val] + val


def metrics_csv(records: Sequence[dict[str, Any]]) -> str:
    """The records as CSV text (one row per epoch; a value an epoch lacks is an empty cell)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(records), restval="", extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _cell(v) for k, v in record.items()})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def write_metrics_csv(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Atomically write :func:`metrics_csv` of ``records`` to ``path``."""
    write_bytes(path, metrics_csv(records).encode("utf-8"))
    return Path(path)


def plot_curves(records: Sequence[dict[str, Any]], path: str | os.PathLike, *,
                best_metric: str | None = None) -> Path:
    """Atomically write a PNG of training loss, training accuracy and validation metrics vs epoch.

    Args:
        records: epoch records (:func:`read_log`).
        best_metric: the ``val_*`` key that picks ``best.pt``; its best epoch is marked.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in records]
    val_keys = [k for k in columns(records) if k.startswith(VAL_PREFIX) and k != "val_time_s"]
    panels = [("training loss", ["loss"]), ("training accuracy", ["acc"]), ("validation", val_keys)]
    panels = [(title, [k for k in keys if any(k in r for r in records)]) for title, keys in panels]
    panels = [(title, keys) for title, keys in panels if keys]
    fig = Figure(figsize=(4 * max(1, len(panels)), 3.4), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            xs = [e for e, r in zip(epochs, records) if _finite(r.get(key))]
            ys = [r[key] for r in records if _finite(r.get(key))]
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
            if key == best_metric and ys:
                i = max(range(len(ys)), key=lambda j: ys[j])
                ax.plot([xs[i]], [ys[i]], marker="*", markersize=12, color="tab:red", linestyle="none",
                        label=f"best {key} (epoch {xs[i]})")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        if len(keys) > 1 or title == "validation":
            ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def write_summaries(log_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                    best_metric: str | None = None) -> None:
    """Rebuild ``metrics.csv`` and ``curves.png`` in ``out_dir`` from ``log_path``.

    A plot that cannot be drawn is a warning, not an error: it must not stop a training run.
    """
    records = read_log(log_path)
    out = Path(out_dir)
    write_metrics_csv(records, out / METRICS_CSV)
    try:
        plot_curves(records, out / CURVES_PNG, best_metric=best_metric)
    except Exception as err:  # noqa: BLE001 - a side output; the run goes on
        log.warning("%s not written (%s: %s)", out / CURVES_PNG, type(err).__name__, err)
