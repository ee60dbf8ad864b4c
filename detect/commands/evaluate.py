"""`detect eval`: evaluate detections against COCO or ILSVRC DET ground truth (no model needed).

Examples:
  detect eval --annotations instances_val2017.json --results dets.json
  detect eval --annotations instances_val2017.json --results dets.json --out eval/ --plots
  detect eval --annotations ILSVRC/Annotations/DET/val --image-set ILSVRC/ImageSets/DET/val.txt \\
      --results dets.json --out eval/            # ILSVRC devkit rule, mAP over the 200 classes
  detect eval --annotations ann.json --images imgs/ --weights rc1.pt rc2.pt --out eval/   # run, then evaluate
  torchrun --nproc-per-node 8 -m detect eval --annotations ann.json --images imgs/ --weights rc1.pt --out eval/

Ground truth is a COCO instances JSON file or a folder of VOC/ILSVRC-style XML files. Results are a COCO
results JSON list ({"image_id", "category_id", "bbox": [x, y, w, h], "score"}) with the ground truth's own
image and category ids (ILSVRC: image name and wnid; an entry whose image_id is unknown is matched by its
"file_name", as `detect run` writes it), or for ILSVRC the devkit's submission text (.txt). The metric is
COCO's (pycocotools' numbers, computed by our own evaluator) for COCO ground truth and the ILSVRC DET
devkit's for XML ground truth, unless --metric says otherwise. Prints the named metrics as fractions (names as
in summary.json) and a per-class table (AP, AP50, ground-truth boxes, detections; best AP first), and warns
when the results look cut at a high score. --out DIR writes summary.json and the confusion matrix at IoU 0.5
(confusion.csv, detections scoring >= 0.25) there (with --weights also detections.json and, for ILSVRC,
detections.ilsvrc.txt in the devkit's submission format); --plots adds under DIR/plots an overview of the
classes' precision-recall curves (pr_overview.png), one PNG per class and confusion.png.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backbone.errors import InputError
from backbone.files import read_json, write_bytes, write_json
from detect.evaluation.coco import (CocoGroundTruth, coco_detection_boxes, coco_ground_truth, evaluate_coco,
                                    read_coco_ground_truth)
from detect.evaluation.report import cut_results_warning, format_metrics, format_per_class_table, write_summary

if TYPE_CHECKING:  # imported where used: `detect eval --results` on COCO JSON needs no torch
    from detect.datasets import DetectionDataset
    from detect.evaluation.cocoeval import DetectionBoxes

log = logging.getLogger(__name__)

#: Detections at or above this score make the confusion matrix (see detect.evaluation.confusion).
CONFUSION_MIN_SCORE = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, type=Path, metavar="GT",
                        help="ground truth: COCO instances JSON, or a folder of VOC/ILSVRC XML files")
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="image folder (needed with --weights; default: beside the annotations)")
    parser.add_argument("--image-set", type=Path, default=None, metavar="FILE",
                        help="XML ground truth: devkit image-set file (lines 'name [index]'); default: all XML")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", type=Path, metavar="DETS",
                        help="COCO results JSON to evaluate, or (ILSVRC) a devkit submission .txt file")
    source.add_argument("--weights", nargs="*", metavar="CKPT",
                        help="region-classifier checkpoints: run the detector on the images, then evaluate "
                             "(no file named: the zero-shot ImageNet GoogLeNet, as in 'detect run')")
    parser.add_argument("--blacklist", type=Path, default=None, metavar="FILE",
                        help="ILSVRC metric: devkit blacklist ('<image index> <wnid>' lines) of (image, class) "
                             "pairs to skip, e.g. data/ILSVRC2014_det_validation_blacklist.txt")
    parser.add_argument("--metric", choices=["auto", "coco", "ilsvrc"], default="auto",
                        help="auto (default): coco for COCO JSON, ilsvrc for XML ground truth")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write summary.json (and plots, detections.json) here")
    parser.add_argument("--plots", action="store_true",
                        help="PNGs under --out/plots: PR-curve overview, one per class, confusion matrix")
    run = parser.add_argument_group("with --weights")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    run.add_argument("--proposals", choices=["paper", "ss", "multibox"], default="paper")
    run.add_argument("--multibox-weights", default=None, metavar="CKPT", help="MultiBox checkpoint")
    run.add_argument("--fast", action="store_true", help="CPU mode: one model, fewer proposals")


def _read_ground_truth(args: argparse.Namespace) -> DetectionDataset:
    from detect.datasets import read_dataset

    kwargs = {}
    if args.image_set is not None:
        if not args.annotations.is_dir():
            raise InputError(args.image_set, "--image-set applies only to a folder of XML annotations")
        kwargs["image_set"] = args.image_set
    return read_dataset(args.annotations, args.images, **kwargs)


def _detect(args: argparse.Namespace, dataset: DetectionDataset) -> list[dict] | None:
    from backbone.console import wants_progress
    from detect.evaluation.results import to_coco_results

    try:
        from detect.pipeline import detect_dataset
    except ImportError as err:
        raise InputError(None, f"--weights needs detect.pipeline, which is not available ({err})") from None
    kwargs = {"multibox_weights": args.multibox_weights} if args.multibox_weights else {}
    dets = detect_dataset(dataset, list(args.weights), device=args.device, proposals=args.proposals,
                          fast=args.fast, progress=wants_progress(), **kwargs)
    if dets is None:  # a torchrun rank other than 0: its detections went to rank 0
        return None
    try:
        return to_coco_results(dets, dataset)
    except ValueError as err:  # labels beyond the ground truth's K classes: a model for other classes
        raise InputError(args.weights[0] if args.weights else None,
                         f"the model's classes do not fit the ground truth's {dataset.num_classes} classes ({err})"
                         ) from None


def _coco_fast_path(args: argparse.Namespace) -> bool:
    """COCO JSON ground truth, a COCO results file, the COCO metric: numpy and numba only, one parse each."""
    return (args.results is not None and args.results.suffix.lower() != ".txt" and args.image_set is None
            and args.metric in ("auto", "coco") and args.annotations.is_file())


def _warn_if_cut(boxes: DetectionBoxes, num_images: int, path: Path | None) -> None:
    message = cut_results_warning(boxes.scores, boxes.image, num_images)
    if message:
        log.warning("%s: %s", path if path is not None else "detections", message)


def _write_figures(args: argparse.Namespace, metrics: Any, gt: CocoGroundTruth, boxes: DetectionBoxes,
                   class_names: list[str], inputs: list[Path]) -> None:
    """confusion.csv under --out; with --plots the PR overview, per-class PR curves and confusion.png."""
    from detect.evaluation.confusion import confusion_matrix, write_confusion_csv

    counts = confusion_matrix(gt.boxes, boxes, len(class_names), min_score=CONFUSION_MIN_SCORE)
    write_confusion_csv(args.out / "confusion.csv", counts, class_names)
    if not args.plots:
        log.info("wrote %s and %s", args.out / "summary.json", args.out / "confusion.csv")
        return
    from detect.evaluation.plots import plot_confusion_matrix, plot_pr_curves, plot_pr_overview

    plots = args.out / "plots"
    if hasattr(metrics, "per_class_AP50"):  # COCO: curves at IoU 0.5, area all, 100 detections
        ap50 = metrics.per_class_AP50()
        p = metrics.precision[0, :, :, 0, -1]
        curves = [(n, metrics.recall_thresholds, p[:, k], ap50[n]) for k, n in enumerate(class_names)
                  if ap50[n] >= 0]
        title, ap_name = "precision-recall at IoU 0.5", "AP50"
    else:
        curves = [(n, *metrics.curves[n], metrics.per_class_AP[n]) for n in class_names if n in metrics.curves]
        title, ap_name = "precision-recall (ILSVRC devkit rule)", "AP"
    files = [plot_pr_overview(plots / "pr_overview.png", curves, title=title, ap_name=ap_name),
             *plot_pr_curves(metrics.pr_curves(), plots, class_names=class_names),
             plot_confusion_matrix(plots / "confusion.png", counts, class_names,
                                   title=f"confusion at IoU 0.5, detections scoring >= {CONFUSION_MIN_SCORE}")]
    log.info("wrote %s, %s and %d plots under %s", args.out / "summary.json", args.out / "confusion.csv", len(files),
             plots)


def main(args: argparse.Namespace) -> int:
    if args.plots and args.out is None:
        raise InputError(None, "--plots needs --out DIR")
    if args.blacklist is not None and args.metric == "coco":
        raise InputError(args.blacklist, "--blacklist applies only to the ILSVRC metric")
    inputs = [p for p in (args.annotations, args.results, args.image_set, args.blacklist) if p is not None]
    start = time.perf_counter()
    if _coco_fast_path(args):
        metric = "coco"
        gt = read_coco_ground_truth(args.annotations)
        boxes = coco_detection_boxes(read_json(args.results), gt, args.results)
        _warn_if_cut(boxes, len(gt), args.results)
        metrics = evaluate_coco(gt, boxes)
        num_images, class_names = len(gt), gt.class_names
    else:
        from detect.evaluation.results import load_coco_results, load_ilsvrc_submission, to_coco_results

        dataset = _read_ground_truth(args)
        if args.results is not None and args.results.suffix.lower() == ".txt":
            if dataset.kind != "ilsvrc":
                raise InputError(args.results, "an ILSVRC submission (.txt) needs ILSVRC XML ground truth")
            results = to_coco_results(load_ilsvrc_submission(args.results, dataset), dataset)
        elif args.results is not None:
            results = load_coco_results(args.results, dataset)
        else:
            results = _detect(args, dataset)
            if results is None:  # not rank 0 under torchrun
                return 0
            if args.out is not None:
                write_json(args.out / "detections.json", results, inputs=inputs)
                if dataset.kind == "ilsvrc":
                    from detect.evaluation.results import results_to_detections, to_ilsvrc_submission

                    text = to_ilsvrc_submission(results_to_detections(results, dataset), dataset)
                    write_bytes(args.out / "detections.ilsvrc.txt", text.encode(), inputs=inputs)
        gt = coco_ground_truth(dataset)
        boxes = coco_detection_boxes(results, gt, args.results)
        if args.results is not None:
            _warn_if_cut(boxes, len(gt), args.results)
        metric = args.metric if args.metric != "auto" else ("coco" if dataset.kind == "coco" else "ilsvrc")
        if metric == "coco":
            metrics = evaluate_coco(gt, boxes)
        else:
            from detect.evaluation.ilsvrc import evaluate_ilsvrc, read_blacklist
            from detect.evaluation.results import results_to_detections

            blacklist = read_blacklist(args.blacklist, dataset) if args.blacklist is not None else set()
            metrics = evaluate_ilsvrc(dataset, results_to_detections(results, dataset), blacklist=blacklist)
        num_images, class_names = len(dataset), list(dataset.class_names)
    seconds = time.perf_counter() - start
    print(f"{metric} evaluation of {len(boxes)} detections on {num_images} images "
          f"({len(class_names)} classes, {seconds:.1f} s)")
    print(format_metrics(metrics))
    print()
    print(format_per_class_table(metrics))
    if args.out is not None:
        write_summary(args.out / "summary.json", metrics, inputs=inputs, ground_truth=str(gt.source),
                      results=str(args.results) if args.results else None,
                      weights=list(args.weights) if args.weights is not None else None, images=num_images,
                      detections=len(boxes), seconds=round(seconds, 3))
        _write_figures(args, metrics, gt, boxes, class_names, inputs)
    return 0
