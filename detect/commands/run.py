"""`detect run`: detect objects in images (files or folders).

Examples:
  detect run photo.jpg                                 # zero-shot: ImageNet GoogLeNet -> 200 ILSVRC classes
  detect run photo.jpg --fast                          # CPU-friendly: one model, fewer proposals
  detect run photos/ --weights rc1.pt rc2.pt rc3.pt --out dets.json --save-vis vis/
  detect run photos/ --weights rc1.pt --multibox-weights mb.pt --proposals paper --device cuda
  torchrun --nproc-per-node 8 -m detect run val/ --weights rc*.pt --out dets.json   # sharded over GPUs

Prints a table per image (class, score, box). `--out FILE.json` writes COCO-results JSON (category ids
are the data set's own ids stored in the checkpoint) and, for models of the 200 ILSVRC DET classes,
`FILE.ilsvrc.txt` in the ILSVRC DET submission format; `FILE.run.json` records the resolved config.
`--save-vis DIR` writes each image with its boxes drawn (never over an input).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from torchvision.ops import box_convert

from backbone.console import wants_progress
from backbone.errors import InputError
from backbone.files import write_bytes, write_json
from backbone.images import IMAGE_SUFFIXES, MAX_PIXELS, expand_inputs
from backbone.device import resolve_device
from detect.pipeline import DetectorConfig, ImageResult, load_detector
from detect.sharding import finish, init_shard, local_device

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DetectorConfig()
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|DIR", help="image files and/or folders of images")
    parser.add_argument("--weights", nargs="+", default=None, metavar="CKPT",
                        help="region-classifier checkpoints (several = ensemble, softmax averaged); "
                             "default: zero-shot ImageNet GoogLeNet mapped to the 200 ILSVRC DET classes")
    parser.add_argument("--multibox-weights", default=None, metavar="CKPT",
                        help="MultiBox checkpoint for the paper's 200 extra proposals")
    parser.add_argument("--proposals", choices=["paper", "ss", "multibox"], default=d.proposals,
                        help="proposal method (default: %(default)s = selective search x2 + MultiBox)")
    parser.add_argument("--fast", action="store_true",
                        help=f"CPU mode: first model only, single-strategy selective search, "
                             f"at most {d.fast_max_proposals} proposals")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the classifiers: about 2x faster on GPU after ~30 s of compiling "
                             "(worth it for folders, not for one image)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--out", type=Path, default=None, help="COCO-results JSON to write")
    parser.add_argument("--save-vis", type=Path, default=None, metavar="DIR", help="write annotated copies here")
    parser.add_argument("--score-threshold", type=float, default=0.2,
                        help="hide detections below this probability (default: %(default)s; evaluation wants "
                             f"{d.score_threshold}, which `detect eval --weights` uses)")
    parser.add_argument("--nms-iou", type=float, default=d.nms_iou, help="per-class NMS IoU (R-CNN: 0.3)")
    parser.add_argument("--max-detections", type=int, default=d.max_detections)
    parser.add_argument("--superpixel-scale", type=float, default=d.superpixel_scale)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="crops per forward pass")
    parser.add_argument("--workers", type=int, default=1, help="processes computing proposals ahead")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="refuse larger images")
    parser.add_argument("--quiet", action="store_true", help="no per-image table")


def _is_ilsvrc_det(category_ids: list) -> bool:
    """True for models of the 200 ILSVRC DET classes in the devkit's order (the zero-shot default, or a
    region classifier trained on ILSVRC DET, whose category ids are the WordNet ids)."""
    from detect.datasets import ILSVRC_DET200, read_synsets

    return [str(c) for c in category_ids] == read_synsets(ILSVRC_DET200)[0]


def _image_id(path: Path, index: int) -> int:
    """COCO-style numeric ids: the file stem when it is a number (COCO's own naming), else 1-based index."""
    return int(path.stem) if path.stem.isdigit() else index + 1


def format_table(result: ImageResult, class_names: list[str]) -> str:
    d = result.detections
    t = result.timing
    head = (f"{result.path}  {result.width}x{result.height}  {result.num_proposals} proposals  "
            f"{len(d)} detections  ({t.proposals:.2f}s proposals, {t.classify:.2f}s classify)")
    if len(d) == 0:
        return head
    rows = [f"  {'class':<24} {'score':>6} {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}"]
    for box, score, label in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist()):
        rows.append(f"  {class_names[label - 1][:24]:<24} {score:6.3f} " + " ".join(f"{v:7.1f}" for v in box))
    return "\n".join([head, *rows])


def coco_rows(image_id: int, result: ImageResult, category_ids: list) -> list[dict]:
    """One image's detections as COCO results (xywh, the data set's own category ids)."""
    d = result.detections
    xywh = box_convert(d.boxes, "xyxy", "xywh")
    return [{"image_id": image_id, "category_id": category_ids[label - 1],
             "bbox": [round(v, 2) for v in box], "score": round(score, 5), "file_name": result.path.name}
            for box, score, label in zip(xywh.tolist(), d.scores.tolist(), d.labels.tolist())]


def ilsvrc_submission(ordered: list[ImageResult], class_names: list[str], category_ids: list) -> str:
    """The run's detections in the ILSVRC DET devkit's submission format (images numbered 1..N in run
    order), through the evaluator's own writer so the +1 pixel convention lives in one place."""
    from detect.datasets import DetectionDataset, ImageRecord
    from detect.evaluation.results import to_ilsvrc_submission

    empty = torch.zeros((0, 4))
    records = [ImageRecord(i + 1, r.path, r.width, r.height, empty, torch.zeros(0, dtype=torch.int64),
                           torch.zeros(0, dtype=torch.bool)) for i, r in enumerate(ordered)]
    dataset = DetectionDataset(records, list(class_names), list(category_ids), "ilsvrc", Path("."))
    return to_ilsvrc_submission({i + 1: r.detections for i, r in enumerate(ordered)}, dataset)


def unique_vis_names(paths: list[Path]) -> list[str]:
    """File names for the annotated copies of ``paths``, one per input, none twice: ``<stem>.jpg``; when
    another input already took it (``a/x.png`` and ``b/x.jpg``), ``<stem>_<suffix>.jpg``, then a counter."""
    used: set[str] = set()
    names = []
    for p in paths:
        candidates = [f"{p.stem}.jpg", f"{p.stem}_{p.suffix.lstrip('.').lower()}.jpg"]
        candidates += (f"{p.stem}_{k}.jpg" for k in range(2, len(paths) + 3))
        name = next(c for c in candidates if c not in used)
        used.add(name)
        names.append(name)
    return names


def main(args: argparse.Namespace) -> int:
    paths = expand_inputs(args.inputs)
    if args.out is not None and args.out.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(args.out, "--out must be a .json file, not an image")
    try:
        config = DetectorConfig(
            proposals=args.proposals, fast=args.fast, nms_iou=args.nms_iou, score_threshold=args.score_threshold,
            max_detections=args.max_detections, superpixel_scale=args.superpixel_scale,
            batch_size=args.batch_size, max_pixels=args.max_pixels, compile=args.compile)
    except ValueError as err:  # an option out of range: one line, before any model is loaded
        raise InputError(None, str(err)) from None
    device = resolve_device(args.device)
    shard = init_shard(device)
    device = local_device(device)
    detector = load_detector(args.weights, config, multibox_weights=args.multibox_weights, device=device)
    names = detector.class_names
    category_ids = list(getattr(detector.classifier, "category_ids", None) or range(1, len(names) + 1))

    vis_names = unique_vis_names(paths)  # from the whole list: every rank names files the same way
    mine = shard.take(paths)
    start = time.perf_counter()
    results: list[tuple[int, ImageResult]] = []
    for (index, _), (result, image) in zip(mine, detector.detect_paths(
            [p for _, p in mine], workers=args.workers, progress=wants_progress() and shard.is_main)):
        results.append((index, result))
        if args.save_vis is not None:
            from detect.visualize import save_visualization

            save_visualization(args.save_vis / vis_names[index], image, result.detections, names, inputs=paths)
    ordered = shard.gather(results)
    finish(shard)
    if ordered is None:  # not rank 0
        return 0
    elapsed = time.perf_counter() - start
    if not args.quiet:
        for result in ordered:
            print(format_table(result, names))
    log.info("%d images in %.1f s (%.2f s/image)", len(ordered), elapsed, elapsed / max(1, len(ordered)))
    if args.out is not None:
        rows = [row for i, r in enumerate(ordered) for row in coco_rows(_image_id(r.path, i), r, category_ids)]
        write_json(args.out, rows, inputs=paths)
        if _is_ilsvrc_det(category_ids):
            text = ilsvrc_submission(ordered, names, category_ids)
            write_bytes(args.out.with_suffix(".ilsvrc.txt"), text.encode(), inputs=paths)
        run_info = {"config": replace(config).to_dict(), "weights": args.weights,
                    "multibox_weights": args.multibox_weights, "device": str(device), "world_size": shard.world,
                    "images": [str(r.path) for r in ordered], "seconds": elapsed}
        write_json(args.out.with_suffix(".run.json"), run_info, indent=1, inputs=paths)
        log.info("wrote %s", args.out)
    return 0

