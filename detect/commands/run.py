"""`detect run`: detect objects in images (files, folders, globs, list files, URLs).

Examples:
  detect run photo.jpg                                 # zero-shot: ImageNet GoogLeNet -> 200 ILSVRC classes
  detect run photo.jpg --fast                          # CPU-friendly: one model, fewer proposals
  detect run 'val/*.jpg' --weights rc.pt --out dets.json --save-vis vis/ --save-txt labels/
  detect run @val.txt --weights rc.pt --out dets.json  # a text file listing images (or --source val.txt)
  detect run https://example.com/cat.jpg --fast --classes cat dog
  detect run photos/ --weights rc1.pt --multibox-weights mb.pt --proposals paper --device cuda
  detect run val/ --weights rc1.pt --out dets.json --resume   # continue a killed run where it stopped
  torchrun --nproc-per-node 8 -m detect run val/ --weights rc*.pt --out dets.json   # sharded over GPUs

Inputs: image files, folders (recursively), quoted globs ('val/*.jpg', 'imgs/**/*.png'), @LIST or
--source LIST (one path, folder, glob or URL per line; relative to the list's folder), http(s) URLs
(downloaded to a temporary file: 30 s timeout, 64 MB limit).

Prints each image's table (class, score, box) as soon as it is done (--quiet: one line per image), with a
progress bar on a terminal. An image that cannot be read is one stderr line `detect: error: FILE: problem`
and the run goes on; the end summary counts them. Exit code: 0 all images done; 1 some skipped (listed
above; the outputs hold the others); 2 bad options or outputs (nothing run), --strict stopped at a bad
image, or no image could be processed (no output written); 130 interrupted (Ctrl-C).

`--out FILE.json` writes COCO-results JSON with every detection above --keep-threshold (category ids are
the data set's own ids stored in the checkpoint) and, for models of the 200 ILSVRC DET classes,
`FILE.ilsvrc.txt` in the ILSVRC DET submission format; `FILE.run.json` records the resolved config. While
it runs, per-image results are appended to `FILE.json.parts/` (removed at the end), so `--resume`
continues a killed run and ends with the same files as an uninterrupted one. Outputs are written
atomically and never over an input (images, list file, checkpoints); an output that cannot be written is
refused before any model is loaded.
`--save-vis DIR` writes each image with its boxes drawn (detections at or above --show-threshold).
`--save-txt DIR` writes `<image stem>.txt` per image: one `category_id x1 y1 x2 y2 score` line per kept
detection (absolute pixels, xyxy, the model's category ids; an empty file = no detection).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from backbone.errors import InputError, escape
from backbone.config import IMAGE_SUFFIXES, MAX_PIXELS
from detect.config import DetectorConfig
from detect.runloop import (Printer, capped_workers, interrupted, model_phrase, progress_bar, proposal_phrase,
                            summary)

if TYPE_CHECKING:  # torch-importing modules load when the command runs, not for --help
    from detect.pipeline import ImageResult

log = logging.getLogger(__name__)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DetectorConfig()
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders, quoted globs, @LIST files, http(s) URLs")
    parser.add_argument("--source", default=None, metavar="LIST",
                        help="text file listing inputs, one per line (same as @LIST)")
    parser.add_argument("--weights", nargs="+", default=None, metavar="CKPT",
                        help="region-classifier checkpoints (several = ensemble, softmax averaged); "
                             "default: zero-shot ImageNet GoogLeNet mapped to the 200 ILSVRC DET classes")
    parser.add_argument("--multibox-weights", default=None, metavar="CKPT",
                        help="MultiBox checkpoint for the paper's 200 extra proposals (--proposals paper/multibox)")
    parser.add_argument("--proposals", choices=["paper", "ss", "multibox"], default=d.proposals,
                        help="proposal method (default: %(default)s = selective search x2 + MultiBox when "
                             "--multibox-weights is given)")
    parser.add_argument("--fast", action="store_true",
                        help=f"CPU mode: first model only, single-strategy selective search, "
                             f"at most {d.fast_max_proposals} proposals")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the classifiers: about 2x faster on GPU after ~30 s of compiling "
                             "(worth it for folders, not for one image)")
    parser.add_argument("--fp32", action="store_true",
                        help="no bf16 autocast (default: bf16 on CUDA and on CPUs with AVX-512 BF16 or AMX, "
                             "fp32 elsewhere)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s = "
                                                         "cuda if usable)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="COCO-results JSON to write")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run with the same --out and options from its "
                             "per-image results (FILE.json.parts/)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first image that cannot be read (exit 2) instead of skipping it")
    parser.add_argument("--save-vis", type=Path, default=None, metavar="DIR", help="write annotated copies here")
    parser.add_argument("--save-txt", type=Path, default=None, metavar="DIR",
                        help="write DIR/<stem>.txt per image: 'category_id x1 y1 x2 y2 score' per detection "
                             "(absolute pixels)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME|ID",
                        help="keep only these classes (names, case-insensitive, or category ids)")
    parser.add_argument("--show-threshold", "--score-threshold", dest="show_threshold", type=float, default=0.2,
                        help="hide table rows and drawn boxes below this probability; --out and --save-txt "
                             "keep everything above --keep-threshold (default: %(default)s)")
    parser.add_argument("--keep-threshold", type=float, default=d.score_threshold,
                        help="drop detections below this probability everywhere (default: %(default)s: "
                             "evaluation wants the low-score tail)")
    parser.add_argument("--nms-iou", type=float, default=d.nms_iou, help="per-class NMS IoU (default and "
                                                                         "R-CNN: %(default)s)")
    parser.add_argument("--max-detections", type=int, default=d.max_detections,
                        help="per image (default: %(default)s)")
    parser.add_argument("--superpixel-scale", type=float, default=d.superpixel_scale,
                        help="selective search superpixel size factor (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="crops per forward pass (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes computing proposals ahead, at most the CPU cores (default: %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="refuse larger images (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="one line per image instead of its table")


# -- what is shown and written per image ---------------------------------------------------------------

def _is_ilsvrc_det(category_ids: list) -> bool:
    """True for models of the 200 ILSVRC DET classes in the devkit's order (the zero-shot default, or a
    region classifier trained on ILSVRC DET, whose category ids are the WordNet ids)."""
    from detect.datasets import ILSVRC_DET200, read_synsets

    return [str(c) for c in category_ids] == read_synsets(ILSVRC_DET200)[0]


def _image_id(item: Any, index: int) -> int:
    """COCO-style numeric ids: the file stem when it is a number (COCO's own naming), else 1-based index."""
    from backbone.inputs import input_stem

    stem = input_stem(item)
    return int(stem) if stem.isdigit() and stem.isascii() else index + 1


def format_table(result: ImageResult, class_names: list[str], *, show_threshold: float = 0.0) -> str:
    """One image's table: a head line, then one row per detection at or above ``show_threshold``."""
    d = result.detections
    t = result.timing
    shown = [(b, s, l) for b, s, l in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist())
             if s >= show_threshold]
    hidden = f" (+{len(d) - len(shown)} below {show_threshold:g})" if len(shown) < len(d) else ""
    head = (f"{escape(result.path)}  {result.width}x{result.height}  {result.num_proposals} proposals  "
            f"{len(shown)} detections{hidden}  ({t.proposals:.2f}s proposals, {t.classify:.2f}s classify)")
    if not shown:
        return head
    rows = [f"  {'class':<24} {'score':>6} {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}"]
    for box, score, label in shown:
        rows.append(f"  {escape(class_names[label - 1])[:24]:<24} {score:6.3f} " + " ".join(f"{v:7.1f}" for v in box))
    return "\n".join([head, *rows])


def format_line(result: ImageResult, class_names: list[str], *, show_threshold: float = 0.0) -> str:
    """``--quiet``: one line per image (detections at or above the display threshold, by class)."""
    from collections import Counter

    d = result.detections
    counts = Counter(class_names[l - 1] for l, s in zip(d.labels.tolist(), d.scores.tolist()) if s >= show_threshold)
    what = ", ".join(f"{n} {escape(name)}" for name, n in counts.most_common()) or "no detections"
    seconds = result.timing.proposals + result.timing.classify + result.timing.nms
    return f"{escape(result.path)}  {result.width}x{result.height}  {what}  ({seconds:.2f}s)"


def txt_lines(result: ImageResult, category_ids: list) -> str:
    """``--save-txt``: one ``category_id x1 y1 x2 y2 score`` line per detection (absolute pixels)."""
    d = result.detections
    return "".join(f"{category_ids[label - 1]} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {score:.5f}\n"
                   for (x1, y1, x2, y2), score, label in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist()))


def unique_names(items: Sequence[Any], suffix: str = ".jpg") -> list[str]:
    """File names for per-image outputs of ``items``, one per input, none twice: ``<stem><suffix>``; when
    another input already took it (``a/x.png`` and ``b/x.jpg``), ``<stem>_<ext><suffix>``, then a counter."""
    from backbone.inputs import input_name

    used: set[str] = set()
    names = []
    for item in items:
        p = Path(input_name(item))
        candidates = [f"{p.stem}{suffix}", f"{p.stem}_{p.suffix.lstrip('.').lower()}{suffix}"]
        candidates += (f"{p.stem}_{k}{suffix}" for k in range(2, len(items) + 3))
        name = next(c for c in candidates if c not in used)
        used.add(name)
        names.append(name)
    return names


def unique_vis_names(paths: Sequence[Any]) -> list[str]:
    return unique_names(paths, ".jpg")


# -- checks before any model is loaded ----------------------------------------------------------------

def _check_options(args: argparse.Namespace) -> DetectorConfig:
    """Every option combination that cannot work, as one line, before anything is loaded."""
    if args.proposals == "multibox" and not args.multibox_weights:
        raise InputError(None, "--proposals multibox needs --multibox-weights MB.pt (a MultiBox checkpoint "
                               "from 'detect multibox train')")
    if args.resume and args.out is None:
        raise InputError(None, "--resume needs --out (the per-image results of a run live beside its --out)")
    if args.out is not None and args.out.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(args.out, "--out must be a .json file, not an image")
    if not 0.0 <= args.show_threshold <= 1.0:
        raise InputError(None, f"--show-threshold must be in [0, 1], got {args.show_threshold}")
    for path in [*(args.weights or []), *([args.multibox_weights] if args.multibox_weights else [])]:
        if not os.path.isfile(path):
            what = "no such file" if not os.path.exists(path) else "not a regular file"
            raise InputError(path, f"{what} (a checkpoint was expected)")
    try:
        return DetectorConfig(
            proposals=args.proposals, fast=args.fast, nms_iou=args.nms_iou, score_threshold=args.keep_threshold,
            max_detections=args.max_detections, superpixel_scale=args.superpixel_scale,
            batch_size=args.batch_size, max_pixels=args.max_pixels, compile=args.compile, amp=not args.fp32)
    except ValueError as err:  # an option out of range
        raise InputError(None, str(err).replace("--score-threshold", "--keep-threshold")) from None


def _check_outputs(args: argparse.Namespace, inputs: list) -> None:
    """Refuse outputs that cannot be written or would go over an input, before any work starts."""
    from backbone.files import check_output, check_output_folder
    from backbone.inputs import is_url
    from detect.runstore import parts_folder

    protected = [i for i in inputs if not is_url(i)]
    protected += [*(args.weights or []), *([args.multibox_weights] if args.multibox_weights else [])]
    if args.source:
        protected.append(args.source)
    protected += [a[1:] for a in args.inputs if a.startswith("@") and os.path.isfile(a[1:])]
    if args.out is not None:
        for path, what in [(args.out, "--out"), (args.out.with_suffix(".ilsvrc.txt"), "--out (.ilsvrc.txt)"),
                           (args.out.with_suffix(".run.json"), "--out (.run.json)")]:
            check_output(path, inputs=protected, what=what)
        parts = parts_folder(args.out)
        if parts.exists() and not parts.is_dir():
            raise InputError(parts, "--out: this path is needed for the per-image results folder; move it")
    for folder, what in [(args.save_vis, "--save-vis"), (args.save_txt, "--save-txt")]:
        if folder is not None:
            if folder.exists() and any(os.path.exists(p) and os.path.samefile(folder, p) for p in protected):
                raise InputError(folder, f"{what} must be a folder, not an input file")
            check_output_folder(folder, what=what)


def resolve_classes(wanted: Sequence[str], class_names: list[str], category_ids: list) -> tuple[int, ...]:
    """``--classes`` values (names, case-insensitive, or category ids) -> labels 1..K (InputError if unknown)."""
    by_name = {n.lower(): k + 1 for k, n in enumerate(class_names)}
    by_id = {str(c): k + 1 for k, c in enumerate(category_ids)}
    labels = []
    for w in wanted:
        label = by_name.get(w.lower(), by_id.get(w))
        if label is None:
            some = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
            raise InputError(None, f"--classes {w!r}: not a class name or category id of this model ({some})")
        labels.append(label)
    return tuple(sorted(set(labels)))


# -- the command -----------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    from backbone.device import describe_device, resolve_device
    from backbone.inputs import expand_inputs
    from detect import runstore
    from detect.sharding import barrier, finish, init_shard, local_device

    config = _check_options(args)
    workers = capped_workers(args.workers)
    inputs = expand_inputs(args.inputs, source=args.source)
    _check_outputs(args, inputs)
    resolved = resolve_device(args.device)
    shard = init_shard(resolved)
    device = local_device(resolved)

    store = None
    already = 0
    if args.out is not None:
        folder = runstore.parts_folder(args.out)
        fp = runstore.fingerprint(config={**config.to_dict(), "classes": args.classes}, weights=args.weights,
                                  multibox_weights=args.multibox_weights, inputs=inputs, world=shard.world)
        store, already = runstore.open_run(folder, fp, shard, resume=args.resume)

    from detect.pipeline import load_detector

    detector = load_detector(args.weights, config, multibox_weights=args.multibox_weights, device=device)
    names = detector.class_names
    category_ids = list(getattr(detector.classifier, "category_ids", None) or range(1, len(names) + 1))
    if args.classes:
        detector.config = replace(detector.config, classes=resolve_classes(args.classes, names, category_ids))
    if shard.is_main:
        from detect.classifier import autocast_dtype

        mode = ("fast mode" if config.fast else "paper mode") + (
            ", bf16" if autocast_dtype(device, config.amp) is not None else ", fp32")
        ranks = f" x {shard.world} ranks" if shard.world > 1 else ""
        resumed = f" ({already} done earlier: resuming)" if already else ""
        log.info("detect run: %d image%s%s | model %s | device %s | proposals: %s | %s | %d worker%s%s",
                 len(inputs), "" if len(inputs) == 1 else "s", resumed, model_phrase(args.weights, detector.config, detector),
                 describe_device(args.device, device), proposal_phrase(config, detector.multibox is not None),
                 mode, workers, "" if workers == 1 else "s", ranks)
        if device.type == "cpu" and not config.fast and config.proposals != "multibox":
            log.info("paper mode on the CPU takes about a minute or more per image; --fast is the CPU mode")

    mine = [(i, item) for i, item in shard.take(inputs) if store is None or i not in store.done]
    vis_names = unique_names(inputs, ".jpg") if args.save_vis is not None else None
    txt_names = unique_names(inputs, ".txt") if args.save_txt is not None else None
    counts = {"ok": 0, "skipped": 0}
    start = time.perf_counter()
    bar = progress_bar(len(mine), shard)
    printer = Printer(bar)
    try:
        outcomes = detector.detect_each([item for _, item in mine], workers=workers)
        for (index, item), outcome in zip(mine, outcomes):
            if outcome.error is not None:
                if args.strict:
                    raise outcome.error
                printer.err(f"detect: error: {outcome.error}")
                counts["skipped"] += 1
                if store is not None:
                    store.add_error(index, item, str(outcome.error))
            else:
                _per_image_outputs(args, outcome, index, inputs, names, category_ids, vis_names, txt_names)
                if store is not None:
                    store.add(index, outcome.result)
                counts["ok"] += 1
                fmt = format_line if args.quiet else format_table
                printer.out(fmt(outcome.result, names, show_threshold=args.show_threshold))
            if bar is not None:
                bar.update()
    except KeyboardInterrupt:
        return interrupted(bar, counts, store, len(inputs), runstore.parts_folder(args.out) if store else None)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start
    barrier(shard)
    if store is not None:
        code = _write_outputs(args, shard, inputs, names, category_ids, config, device, elapsed) \
            if shard.is_main else 0
    else:
        gathered = shard.gather([(shard.rank, counts)])
        code = 0 if gathered is None else summary(sum(c["ok"] for c in gathered),
                                                   sum(c["skipped"] for c in gathered), len(inputs), elapsed)
    finish(shard)
    return code


def _per_image_outputs(args, outcome, index: int, inputs: list, names: list[str], category_ids: list,
                       vis_names, txt_names) -> None:
    """--save-vis and --save-txt for one image, written as soon as it is done (atomically)."""
    from backbone.files import write_bytes
    from backbone.inputs import is_url

    protected = [i for i in inputs if not is_url(i)]
    if args.save_vis is not None:
        from detect.visualize import save_visualization

        d = outcome.result.detections
        keep = d.scores >= args.show_threshold
        shown = type(d)(d.boxes[keep], d.scores[keep], d.labels[keep])
        save_visualization(args.save_vis / vis_names[index], outcome.image, shown, names, inputs=protected)
    if args.save_txt is not None:
        write_bytes(args.save_txt / txt_names[index], txt_lines(outcome.result, category_ids).encode(),
                    inputs=protected)


def _write_outputs(args, shard, inputs: list, names: list[str], category_ids: list, config: DetectorConfig,
                   device, elapsed: float) -> int:
    """Rank 0, after every rank is done: the final files from the per-image results, atomically; then the
    results folder is removed. Nothing is written when no image could be processed."""
    import contextlib
    import json
    import shutil

    from backbone.files import atomic_path, write_json
    from backbone.inputs import input_name, is_url
    from detect import runstore
    from detect.evaluation.results import coco_rows, ilsvrc_lines

    folder = runstore.parts_folder(args.out)
    ok, skipped = runstore.counts(folder)
    if ok == 0:
        log.info("no image could be processed: %s not written", args.out)
        return summary(0, skipped, len(inputs), elapsed)
    protected = [i for i in inputs if not is_url(i)] + list(args.weights or [])
    if args.multibox_weights:
        protected.append(args.multibox_weights)
    ilsvrc = _is_ilsvrc_det(category_ids)
    done, skipped_list = [], []
    with contextlib.ExitStack() as stack:
        fj = open(stack.enter_context(atomic_path(args.out, inputs=protected)), "w", encoding="utf-8")
        ft = None
        if ilsvrc:  # models of the 200 ILSVRC DET classes: the devkit's submission file too
            ft = open(stack.enter_context(atomic_path(args.out.with_suffix(".ilsvrc.txt"), inputs=protected)),
                      "w", encoding="utf-8")
        with fj, (ft or contextlib.nullcontext()):
            fj.write("[")
            first = True
            for rec in runstore.records(folder, inputs):
                if rec.result is None:
                    skipped_list.append({"input": rec.input, "error": rec.error})
                    continue
                done.append(rec.input)
                rows = coco_rows(_image_id(rec.input, rec.index), rec.result.detections, category_ids,
                                 file_name=input_name(rec.result.path), rounded=True)
                for row in rows:
                    fj.write(("" if first else ", ") + json.dumps(row, allow_nan=False))
                    first = False
                if ft is not None:  # the image numbered by its position in the input list
                    ft.write(ilsvrc_lines(rec.index + 1, rec.result.detections, len(names)))
            fj.write("]")
    run_info = {"config": {**config.to_dict(), "classes": args.classes}, "show_threshold": args.show_threshold,
                "weights": args.weights, "multibox_weights": args.multibox_weights, "device": str(device),
                "world_size": shard.world, "images": done, "skipped": skipped_list, "seconds": elapsed}
    write_json(args.out.with_suffix(".run.json"), run_info, indent=1, inputs=protected)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("wrote %s", args.out)
    return summary(ok, skipped, len(inputs), elapsed)
