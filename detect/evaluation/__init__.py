"""Detection evaluation apart from the model: COCO (pycocotools' numbers, our evaluator) and ILSVRC DET
(devkit rule).

Names are imported on first use (PEP 562), so ``detect eval --results`` on COCO JSON loads neither torch
(the ILSVRC and tensor paths) nor matplotlib (plots) unless it needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module under detect.evaluation
_EXPORTS = {
    "CocoMetrics": "coco", "CocoGroundTruth": "coco", "evaluate_coco": "coco", "read_coco_ground_truth": "coco",
    "coco_detection_boxes": "coco",
    "IlsvrcMetrics": "ilsvrc", "evaluate_ilsvrc": "ilsvrc", "read_blacklist": "ilsvrc",
    "confusion_matrix": "confusion",
    "plot_pr_curves": "plots", "plot_pr_overview": "plots", "plot_confusion_matrix": "plots",
    "write_confusion_csv": "confusion",
    "cut_results_warning": "report", "format_metrics": "report", "format_per_class_table": "report",
    "write_summary": "report",
    "coco_rows": "results", "ilsvrc_lines": "results", "load_coco_results": "results",
    "load_ilsvrc_submission": "results", "results_to_detections": "results", "to_coco_results": "results",
    "to_ilsvrc_submission": "results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
