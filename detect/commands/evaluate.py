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
COCO's (pycocotools) for COCO ground truth and the ILSVRC DET devkit's for XML ground truth, unless --metric
says otherwise. Prints the named metrics and a per-class AP table. --out DIR writes summary.json there (with
--weights also detections.json and, for ILSVRC, detections.ilsvrc.txt in the devkit's submission format);
--plots adds precision-recall curves (PNG) under DIR/plots.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from backbone.console import wants_progress
from backbone.errors import InputError
from backbone.files import write_bytes, write_json
from detect.datasets import DetectionDataset, read_dataset
from detect.evaluation import (evaluate_coco, evaluate_ilsvrc, format_metrics, format_per_class_table,
                               load_coco_results, load_ilsvrc_submission, plot_pr_curves, read_blacklist,
                               results_to_detections, to_coco_results, to_ilsvrc_submission,
                               write_summary)

log = logging.getLogger(__name__)


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
    parser.add_argument("--plots", action="store_true", help="precision-recall curve PNGs under --out")
    run = parser.add_argument_group("with --weights")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    run.add_argument("--proposals", choices=["paper", "ss", "multibox"], default="paper")
    run.add_argument("--multibox-weights", default=None, metavar="CKPT", help="MultiBox checkpoint")
    run.add_argument("--fast", action="store_true", help="CPU mode: one model, fewer proposals")


def _read_ground_truth(args: argparse.Namespace) -> DetectionDataset:
    kwargs = {}
    if args.image_set is not None:
        if not args.annotations.is_dir():
            raise InputError(args.image_set, "--image-set applies only to a folder of XML annotations")
        kwargs["image_set"] = args.image_set
    return read_dataset(args.annotations, args.images, **kwargs)


def _detect(args: argparse.Namespace, dataset: DetectionDataset) -> list[dict] | None:
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


def main(args: argparse.Namespace) -> int:
    if args.plots and args.out is None:
        raise InputError(None, "--plots needs --out DIR")
    if args.blacklist is not None and args.metric == "coco":
        raise InputError(args.blacklist, "--blacklist applies only to the ILSVRC metric")
    inputs = [p for p in (args.annotations, args.results, args.image_set, args.blacklist) if p is not None]
    start = time.perf_counter()
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
                text = to_ilsvrc_submission(results_to_detections(results, dataset), dataset)
                write_bytes(args.out / "detections.ilsvrc.txt", text.encode(), inputs=inputs)
    metric = args.metric if args.metric != "auto" else ("coco" if dataset.kind == "coco" else "ilsvrc")
    if metric == "coco":
        metrics = evaluate_coco(dataset, results)
    else:
        blacklist = read_blacklist(args.blacklist, dataset) if args.blacklist is not None else set()
        metrics = evaluate_ilsvrc(dataset, results_to_detections(results, dataset), blacklist=blacklist)
    seconds = time.perf_counter() - start
    print(f"{metric} evaluation of {len(results)} detections on {len(dataset)} images "
          f"({dataset.num_classes} classes, {seconds:.1f} s)")
    print(format_metrics(metrics))
    print()
    print(format_per_class_table(metrics))
    if args.out is not None:
        write_summary(args.out / "summary.json", metrics, inputs=inputs, ground_truth=str(dataset.source),
                      results=str(args.results) if args.results else None,
                      weights=list(args.weights) if args.weights is not None else None, images=len(dataset),
                      detections=len(results), seconds=round(seconds, 3))
        if args.plots:
            files = plot_pr_curves(metrics.pr_curves(), args.out / "plots", class_names=dataset.class_names)
            log.info("wrote %s and %d plots under %s", args.out / "summary.json", len(files), args.out / "plots")
        else:
            log.info("wrote %s", args.out / "summary.json")
    return 0
