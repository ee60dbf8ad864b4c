"""Detection evaluation apart from the model: COCO (pycocotools) and ILSVRC DET (devkit rule)."""

from detect.evaluation.coco import CocoMetrics, evaluate_coco
from detect.evaluation.evaluator import DetectionEvaluator
from detect.evaluation.ilsvrc import IlsvrcMetrics, evaluate_ilsvrc, read_blacklist
from detect.evaluation.plots import plot_pr_curves
from detect.evaluation.report import format_metrics, format_per_class_table, write_summary
from detect.evaluation.results import (load_coco_results, load_ilsvrc_submission, results_to_detections,
                                       to_coco_results, to_ilsvrc_submission)

__all__ = ["CocoMetrics", "DetectionEvaluator", "IlsvrcMetrics", "evaluate_coco", "evaluate_ilsvrc", "format_metrics",
           "format_per_class_table", "load_coco_results", "load_ilsvrc_submission", "plot_pr_curves", "read_blacklist", "results_to_detections",
           "to_coco_results", "to_ilsvrc_submission", "write_summary"]
