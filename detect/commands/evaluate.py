"""`detect eval`: evaluate detections against COCO or ILSVRC DET ground truth (no model needed).

Examples:
  detect eval --annotations instances_val2017.json --results dets.json
  detect eval --annotations instances_val2017.json --results dets.json --out eval/ --plots
  detect eval --annotations ILSVRC/Annotations/DET/val --image-set ILSVRC/ImageSets/DET/val.txt \\
      --results dets.json --out eval/            # ILSVRC devkit rule, mAP over the 200 classes
  detect eval --annotations ann.json --images imgs/ --weights rc1.pt rc2.pt --out eval/   # run, then evaluate
  detect eval --annotations ann.json --images imgs/ --weights rc1.pt --out eval/ --resume   # continue a killed run
  detect eval --annotations ann.json --results dets.json --classes person dog 18   # only these classes
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
--classes NAME|ID ... evaluates those classes only (names case-insensitive, or the ground truth's category
ids): the other classes' ground truth and detections are left out, as pycocotools' params.catIds does.

With --weights the detector runs over the data set as `detect run` runs over a folder: a progress bar on a
terminal, an image that cannot be read is one stderr line `detect: error: FILE: problem` and is skipped
(--strict stops there instead), and the metrics are those of the images processed. Exit code: 0 all
images done; 1 some skipped (listed above; evaluated without them); 2 bad options or files, --strict stopped,
or no image could be processed (nothing written); 130 interrupted. With --out, per-image results are kept in
DIR/detections.json.parts/ as the run goes (removed at the end), so --resume continues a killed run and
ends with the same files; DIR/detections.run.json records the options, device and skipped images. Outputs
that cannot be written or would go over an input are refused before anything is read or run.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from backbone.errors import InputError
from backbone.files import write_bytes, write_json
from backbone.safeio import load_json
from detect.runloop import (Printer, capped_workers, interrupted, model_phrase, progress_bar, proposal_phrase,
                            summary)

if TYPE_CHECKING:  # imported where used: `detect eval --results` on COCO JSON needs no torch
    from detect.evaluation.coco import CocoGroundTruth
    from detect.datasets import DetectionDataset
    from detect.evaluation.cocoeval import DetectionBoxes

log = logging.getLogger(__name__)

#: Detections at or above this score make the confusion matrix (see detect.evaluation.confusion).
CONFUSION_MIN_SCORE = 0.25
#: Files written under --out (checked before any work starts).
OUTPUT_FILES = ("summary.json", "confusion.csv", "detections.json", "detections.ilsvrc.txt", "detections.run.json")


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
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME|ID",
                        help="evaluate only these classes (names, case-insensitive, or category ids; "
                             "default: all)")
    parser.add_argument("--blacklist", type=Path, default=None, metavar="FILE",
                        help="ILSVRC metric: devkit blacklist ('<image index> <wnid>' lines) of (image, class) "
                             "pairs to skip, e.g. data/ILSVRC2014_det_validation_blacklist.txt")
    parser.add_argument("--metric", choices=["auto", "coco", "ilsvrc"], default="auto",
                        help="auto: coco for COCO JSON, ilsvrc for XML ground truth (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write summary.json (and plots, detections.json) here")
    parser.add_argument("--plots", action="store_true",
                        help="PNGs under --out/plots: PR-curve overview, one per class, confusion matrix")
    run = parser.add_argument_group("with --weights")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s = "
                                                      "cuda if usable)")
    run.add_argument("--proposals", choices=["paper", "ss", "multibox"], default="paper",
                     help="proposal method (default: %(default)s)")
    run.add_argument("--multibox-weights", default=None, metavar="CKPT", help="MultiBox checkpoint")
    run.add_argument("--fast", action="store_true", help="CPU mode: one model, fewer proposals")
    run.add_argument("--workers", type=int, default=1,
                     help="processes computing proposals ahead, at most the CPU cores (default: %(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run with the same --out and options from its per-image "
                          "results (DIR/detections.json.parts/)")
    run.add_argument("--strict", action="store_true",
                     help="stop at the first image that cannot be read (exit 2) instead of skipping it")


# -- checks before anything is read --------------------------------------------------------------------

def _inputs(args: argparse.Namespace) -> list:
    """Every file the user gave: outputs may never go over one of them."""
    files = [args.annotations, args.results, args.image_set, args.blacklist, args.multibox_weights,
             *(args.weights or [])]
    return [f for f in files if f is not None]


def _check_options(args: argparse.Namespace) -> None:
    """Every option combination that cannot work, as one line, before any file is read."""
    if args.plots and args.out is None:
        raise InputError(None, "--plots needs --out DIR")
    if args.blacklist is not None and args.metric == "coco":
        raise InputError(args.blacklist, "--blacklist applies only to the ILSVRC metric")
    if args.weights is None:
        for flag, used in [("--resume", args.resume), ("--strict", args.strict),
                           ("--multibox-weights", args.multibox_weights is not None)]:
            if used:
                raise InputError(None, f"{flag} applies only with --weights (running the detector)")
        return
    if args.resume and args.out is None:
        raise InputError(None, "--resume needs --out (the per-image results of a run live in its --out folder)")
    if args.proposals == "multibox" and not args.multibox_weights:
        raise InputError(None, "--proposals multibox needs --multibox-weights MB.pt (a MultiBox checkpoint "
                               "from 'detect multibox train')")
    for path in [*args.weights, *([args.multibox_weights] if args.multibox_weights else [])]:
        if not os.path.isfile(path):
            what = "no such file" if not os.path.exists(path) else "not a regular file"
            raise InputError(path, f"{what} (a checkpoint was expected)")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an --out folder, or a file under it, that cannot be written or would go over an input."""
    from backbone.files import check_output, check_output_folder

    if args.out is None:
        return
    inputs = _inputs(args)
    if args.out.exists() and any(os.path.exists(p) and os.path.samefile(args.out, p) for p in inputs):
        raise InputError(args.out, "--out must be a folder, not an input file")
    check_output_folder(args.out, what="--out")
    for name in OUTPUT_FILES:
        check_output(args.out / name, inputs=inputs, what=f"--out ({name})")
    if args.plots:
        check_output_folder(args.out / "plots", what="--out (plots)")


def resolve_classes(wanted: Sequence[str], class_names: Sequence[str], category_ids: Sequence[Any]) -> list[int]:
    """``--classes`` values (names, case-insensitive, or category ids) -> sorted 0-based class indices.

    Raises InputError (one line) for a value that is neither a class name nor a category id."""
    by_name = {n.lower(): k for k, n in enumerate(class_names)}
    by_id = {str(c): k for k, c in enumerate(category_ids)}
    chosen = set()
    for w in wanted:
        k = by_name.get(w.lower(), by_id.get(w))
        if k is None:
            some = ", ".join(list(class_names)[:5]) + (", ..." if len(class_names) > 5 else "")
            raise InputError(None, f"--classes {w!r}: not a class name or category id of the ground truth ({some})")
        chosen.add(k)
    return sorted(chosen)


# -- evaluation ---------------------------------------------------------------------------------------

def _read_ground_truth(args: argparse.Namespace) -> DetectionDataset:
    from detect.datasets import read_dataset

    kwargs = {}
    if args.image_set is not None:
        if not args.annotations.is_dir():
            raise InputError(args.image_set, "--image-set applies only to a folder of XML annotations")
        kwargs["image_set"] = args.image_set
    return read_dataset(args.annotations, args.images, **kwargs)


def _coco_fast_path(args: argparse.Namespace) -> bool:
    """COCO JSON ground truth, a COCO results file, the COCO metric: numpy and numba only, one parse each."""
    return (args.results is not None and args.results.suffix.lower() != ".txt" and args.image_set is None
            and args.metric in ("auto", "coco") and args.annotations.is_file())


def _warn_if_cut(boxes: DetectionBoxes, num_images: int, path: Path | None) -> None:
    from detect.evaluation.report import cut_results_warning

    message = cut_results_warning(boxes.scores, boxes.image, num_images)
    if message:
        log.warning("%s: %s", path if path is not None else "detections", message)


def _write_figures(args: argparse.Namespace, metrics: Any, gt: CocoGroundTruth, boxes: DetectionBoxes,
                   class_names: list[str], inputs: list) -> None:
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


@dataclass
class _Detected:
    """What the detector produced over the data set (rank 0): COCO results of the images done, the data set
    restricted to them, and the run's record for detections.run.json."""

    results: list[dict]
    dataset: Any
    skipped: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    code: int = 0


def main(args: argparse.Namespace) -> int:
    # numpy/numba (the evaluator) load here, not for --help
    from detect.evaluation.coco import (coco_detection_boxes, coco_ground_truth, evaluate_coco,
                                        read_coco_ground_truth, select_categories)
    from detect.evaluation.report import format_metrics, format_per_class_table, write_summary

    _check_options(args)
    _check_outputs(args)
    inputs = _inputs(args)
    start = time.perf_counter()
    detected = None
    if _coco_fast_path(args):
        metric = "coco"
        gt = read_coco_ground_truth(args.annotations)
        boxes = coco_detection_boxes(load_json(args.results), gt, args.results)
        if args.classes:
            gt, boxes = select_categories(gt, boxes, resolve_classes(args.classes, gt.class_names, gt.category_ids))
        _warn_if_cut(boxes, len(gt), args.results)
        metrics = evaluate_coco(gt, boxes)
        num_images, class_names = len(gt), gt.class_names
    else:
        from detect.evaluation.results import load_coco_results, load_ilsvrc_submission, to_coco_results

        dataset = _read_ground_truth(args)
        keep = resolve_classes(args.classes, dataset.class_names, dataset.category_ids) if args.classes else None
        if args.results is not None and args.results.suffix.lower() == ".txt":
            if dataset.kind != "ilsvrc":
                raise InputError(args.results, "an ILSVRC submission (.txt) needs ILSVRC XML ground truth")
            results = to_coco_results(load_ilsvrc_submission(args.results, dataset), dataset)
        elif args.results is not None:
            results = load_coco_results(args.results, dataset)
        else:
            detected = _detect(args, dataset, keep)
            if detected is None:  # not rank 0 under torchrun
                return 0
            if isinstance(detected, int):  # interrupted, or no image could be processed
                return detected
            dataset, results = detected.dataset, detected.results
            if args.out is not None:
                write_json(args.out / "detections.json", results, inputs=inputs)
                if dataset.kind == "ilsvrc":
                    from detect.evaluation.results import results_to_detections, to_ilsvrc_submission

                    text = to_ilsvrc_submission(results_to_detections(results, dataset), dataset)
                    write_bytes(args.out / "detections.ilsvrc.txt", text.encode(), inputs=inputs)
        gt = coco_ground_truth(dataset)
        boxes = coco_detection_boxes(results, gt, args.results)
        if keep is not None:
            gt, boxes = select_categories(gt, boxes, keep)
        if args.results is not None:
            _warn_if_cut(boxes, len(gt), args.results)
        metric = args.metric if args.metric != "auto" else ("coco" if dataset.kind == "coco" else "ilsvrc")
        if metric == "coco":
            metrics = evaluate_coco(gt, boxes)
        else:
            from detect.evaluation.ilsvrc import evaluate_ilsvrc, read_blacklist, select_classes
            from detect.evaluation.results import results_to_detections

            blacklist = read_blacklist(args.blacklist, dataset) if args.blacklist is not None else set()
            metrics = evaluate_ilsvrc(dataset, results_to_detections(results, dataset), blacklist=blacklist)
            if keep is not None:
                metrics = select_classes(metrics, [dataset.class_names[k] for k in keep])
        num_images, class_names = len(dataset), list(gt.class_names)
    seconds = time.perf_counter() - start
    classes = f"{len(class_names)} classes" + (" chosen by --classes" if args.classes else "")
    print(f"{metric} evaluation of {len(boxes)} detections on {num_images} images ({classes}, {seconds:.1f} s)")
    print(format_metrics(metrics))
    print()
    print(format_per_class_table(metrics))
    if args.out is not None:
        context: dict[str, Any] = {}
        if detected is not None and detected.skipped:
            context["skipped"] = detected.skipped
        if args.classes:
            context["classes"] = class_names
        write_summary(args.out / "summary.json", metrics, inputs=inputs, ground_truth=str(gt.source),
                      results=str(args.results) if args.results else None,
                      weights=list(args.weights) if args.weights is not None else None, images=num_images,
                      detections=len(boxes), **context)
        _write_figures(args, metrics, gt, boxes, class_names, inputs)
        if detected is not None:
            write_json(args.out / "detections.run.json", {**detected.info, "seconds": round(seconds, 3)}, indent=1,
                       inputs=inputs)
            _remove_parts(args)
    return detected.code if detected is not None else 0


# -- --weights: the detector over the data set, as `detect run` over a folder ------------------------------

def _parts(args: argparse.Namespace) -> Path:
    from detect import runstore

    return runstore.parts_folder(args.out / "detections.json")


def _remove_parts(args: argparse.Namespace) -> None:
    import shutil

    shutil.rmtree(_parts(args), ignore_errors=True)


def _detect(args: argparse.Namespace, dataset: DetectionDataset, keep: list[int] | None) -> _Detected | int | None:
    """Run the detector over ``dataset`` (this rank's shard), one image at a time, as `detect run` does.

    Returns, on rank 0, the images done and their COCO results (:class:`_Detected`), or an exit code when
    interrupted or when no image could be processed; None on the other ranks.
    """
    from backbone.device import describe_device, resolve_device
    from detect import runstore
    from detect.pipeline import DetectorConfig, load_detector
    from detect.sharding import barrier, finish, init_shard, local_device

    workers = capped_workers(args.workers)
    classes = tuple(k + 1 for k in keep) if keep is not None else ()
    config = DetectorConfig(proposals=args.proposals, fast=args.fast, classes=classes)
    files = [r.file for r in dataset.records]
    resolved = resolve_device(args.device)
    shard = init_shard(resolved)
    device = local_device(resolved)

    store = None
    already = 0
    if args.out is not None:
        folder = _parts(args)
        fp = runstore.fingerprint(config=config.to_dict(), weights=args.weights,
                                  multibox_weights=args.multibox_weights, inputs=files, world=shard.world)
        fp["ground_truth"] = os.path.abspath(dataset.source)
        store, already = runstore.open_run(folder, fp, shard, resume=args.resume)

    detector = load_detector(args.weights, config, multibox_weights=args.multibox_weights, device=device)
    model_ids = [str(c) for c in detector.classifier.category_ids]
    data_ids = [str(c) for c in dataset.category_ids]
    if model_ids != data_ids:  # labels are positions in these lists: they must agree exactly
        raise InputError(args.weights[0] if args.weights else "zero-shot ImageNet model",
                         f"the model's classes ({len(model_ids)}: {', '.join(model_ids[:3])}, ...) do not fit the "
                         f"ground truth's {len(data_ids)} classes ({', '.join(data_ids[:3])}, ...) in number or order")
    if shard.is_main:
        ranks = f" x {shard.world} ranks" if shard.world > 1 else ""
        resumed = f" ({already} done earlier: resuming)" if already else ""
        log.info("detect eval: %d image%s of %s%s | model %s | device %s | proposals: %s | %s | %d worker%s%s",
                 len(files), "" if len(files) == 1 else "s", dataset.source, resumed,
                 model_phrase(args.weights, detector.config, detector), describe_device(args.device, device),
                 proposal_phrase(config, detector.multibox is not None),
                 "fast mode" if config.fast else "paper mode", workers, "" if workers == 1 else "s", ranks)

    mine = [(i, f) for i, f in shard.take(files) if store is None or i not in store.done]
    kept: list[tuple[int, tuple[int, Any]]] = []  # without --out: (index, (index, Detections or error line))
    counts = {"ok": 0, "skipped": 0}
    bar = progress_bar(len(mine), shard)
    printer = Printer(bar)
    step = max(1, len(mine) // 10)
    start = time.perf_counter()
    try:
        outcomes = detector.detect_each([f for _, f in mine], workers=workers)
        for n, ((index, item), outcome) in enumerate(zip(mine, outcomes), start=1):
            if outcome.error is not None:
                if args.strict:
                    raise outcome.error
                printer.err(f"detect: error: {outcome.error}")
                counts["skipped"] += 1
                if store is not None:
                    store.add_error(index, item, str(outcome.error))
                else:
                    kept.append((index, (index, str(outcome.error))))
            else:
                counts["ok"] += 1
                if store is not None:
                    store.add(index, outcome.result)
                else:
                    kept.append((index, (index, outcome.result.detections)))
            if bar is not None:
                bar.update()
            elif shard.is_main and (n % step == 0 or n == len(mine)):
                elapsed = time.perf_counter() - start
                log.info("progress: %s/%s images (%.2f s/image)", f"{n:,}", f"{len(mine):,}", elapsed / n)
    except KeyboardInterrupt:
        return interrupted(bar, counts, store, len(files), _parts(args) if store else None)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start
    barrier(shard)
    outcomes_by_index: list[tuple[int, Any]] | None
    if store is not None:
        outcomes_by_index = None
        if shard.is_main:
            outcomes_by_index = [(rec.index, rec.result.detections if rec.result is not None else rec.error)
                                 for rec in runstore.records(_parts(args), files)]
    else:
        outcomes_by_index = shard.gather(kept)
    finish(shard)
    if outcomes_by_index is None:
        return None
    dets, skipped = {}, []
    for index, value in outcomes_by_index:
        record = dataset.records[index]
        if isinstance(value, str):
            skipped.append({"input": str(record.file), "image_id": record.image_id, "error": value})
        else:
            dets[record.image_id] = value
    code = summary(len(dets), len(skipped), len(files), elapsed)
    if not dets:
        if args.out is not None:
            log.info("no image could be processed: nothing written under %s", args.out)
        return code
    done = [r for r in dataset.records if r.image_id in dets]
    index = {r.image_id: dataset.image_index.get(r.image_id, pos + 1) for pos, r in enumerate(dataset.records)}
    subset = replace(dataset, records=done, image_index=index)  # devkit indices kept for the images done
    from detect.evaluation.results import to_coco_results

    results = to_coco_results({r.image_id: dets[r.image_id] for r in done}, subset)
    info = {"config": config.to_dict(), "weights": args.weights, "multibox_weights": args.multibox_weights,
            "device": str(device), "world_size": shard.world, "images": len(done), "skipped": skipped}
    return _Detected(results, subset, skipped, info, code)
