"""`detect proposals`: region proposals (selective search, MultiBox, or the paper's combination).

Examples:
  detect proposals photo.jpg --out boxes.json                       # selective search, fast mode
  detect proposals photos/ --method multibox --weights mb.pt         # top 200 MultiBox boxes, JSON on stdout
  detect proposals --annotations ann.json --images imgs/ --method paper --weights mb.pt --gt --out p.json
  detect proposals --annotations ann.json --images imgs/ --cache cache/ --workers 2 --gt --limit 20

Methods: `ss` = selective search (R-CNN's fast mode); `multibox` = the `--top-k` most confident MultiBox
boxes (needs `--weights`); `paper` = selective search at superpixel scale 2 plus the top 200 MultiBox
boxes, near-duplicates (IoU > `--dedupe-iou`) removed (GoogLeNet paper, section 8). Without `--weights`,
`paper` is selective search alone (a warning says so).

Output: a JSON list, one entry per image: {"file", "image_id", "boxes" [[x1, y1, x2, y2], ...] in pixels,
"scores", "sources" ("ss" | "multibox")}, best first within each source; to `--out` (written atomically)
or to stdout. With `--gt` (needs `--annotations`) a table of recall at IoU 0.5 / 0.7, ABO, MABO,
AR@100, AR@1000 and boxes per image goes to stdout (the JSON then needs `--out`).
`--cache DIR` stores one file per image under DIR/<method>-<config hash>/ and reuses it on the next run
(an interrupted run resumes where it stopped).

Inputs: image files, folders, quoted globs ('imgs/*.jpg'), @LIST / --source LIST files, http(s) URLs (as
`detect run`). Without --cache and --gt, each image is reported as soon as it is done (its JSON entry
streamed to stdout, or with --out one summary line per image), an unreadable image is one stderr line and
skipped, and `--out` keeps per-image results in `FILE.json.parts/` so that `--resume` continues a killed
run. Exit code: 0 all done, 1 some images skipped, 2 bad options or outputs / --strict / no image done,
130 interrupted. An output that would overwrite an input (an image, --weights, --annotations, a list
file) or cannot be written is refused before any work starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from backbone.errors import InputError
from backbone.files import write_json
from backbone.inputs import expand_inputs, is_url, read_input
from detect.proposalfile import proposals_json
from detect.runloop import capped_workers, summary
from proposals.config import DEDUPE_IOU, METHOD_NAMES, MULTIBOX_TOP_K

if TYPE_CHECKING:  # torch-importing modules load when the command runs, not for --help
    from proposals.cache import CacheItem
    from proposals.merge import ProposalMethod
    from proposals.structures import Proposals

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders, quoted globs, @LIST files, http(s) URLs")
    parser.add_argument("--source", default=None, metavar="LIST",
                        help="text file listing inputs, one per line (same as @LIST)")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="COCO JSON file or folder of VOC/ILSVRC XML: propose for its images")
    parser.add_argument("--images", type=Path, default=None, help="image folder of --annotations")
    parser.add_argument("--method", choices=sorted(METHOD_NAMES), default="ss", help="(default: %(default)s)")
    parser.add_argument("--weights", type=Path, default=None, metavar="CKPT",
                        help="MultiBox checkpoint (for --method multibox or paper)")
    parser.add_argument("--superpixel-scale", type=float, default=None,
                        help="selective search superpixel size factor (default: 1 for ss, 2 for paper)")
    parser.add_argument("--strategy", default=None,
                        help="selective search strategy: diverse (ours: more objects per box than OpenCV's fast "
                             "mode), or R-CNN's fast, quality, single (default: diverse for ss, fast for paper, "
                             "as the GoogLeNet paper)")
    parser.add_argument("--top-k", type=int, default=MULTIBOX_TOP_K, help="MultiBox boxes per image")
    parser.add_argument("--dedupe-iou", type=float, default=DEDUPE_IOU,
                        help="paper: drop a box overlapping a better-ranked one by more than this IoU "
                             "(default: %(default)s; 1 keeps all)")
    parser.add_argument("--gt", action="store_true", help="print recall / ABO / AR against --annotations")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: stdout)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR", help="proposal cache root folder")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, at most the CPU cores (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run with the same --out from its per-image results")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first image that cannot be read (exit 2) instead of skipping it")
    parser.add_argument("--device", default="cpu", help="where MultiBox runs (default: %(default)s)")


def build_method(args: argparse.Namespace) -> ProposalMethod:
    """The :class:`ProposalMethod` the flags describe (InputError for inconsistent flags)."""
    from proposals.merge import ProposalMethod, load_multibox_cached

    if args.method == "multibox" and args.weights is None:
        raise InputError(None, "--method multibox needs --weights (a MultiBox checkpoint)")
    if args.top_k < 1:
        raise InputError(None, f"--top-k must be >= 1, got {args.top_k}")
    if not 0 < args.dedupe_iou <= 1:
        raise InputError(None, f"--dedupe-iou must be in (0, 1], got {args.dedupe_iou}")
    ss_config = None
    if args.method != "multibox":
        from proposals.selective_search import STRATEGIES, SelectiveSearchConfig

        strategy = args.strategy or ("fast" if args.method == "paper" else "diverse")
        if strategy not in STRATEGIES:
            raise InputError(None, f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        scale = args.superpixel_scale
        if scale is None:
            scale = 2.0 if args.method == "paper" else 1.0
        if scale <= 0:
            raise InputError(None, f"--superpixel-scale must be > 0, got {scale}")
        ss_config = SelectiveSearchConfig.for_strategy(strategy, superpixel_scale=scale)
    weights = None
    if args.weights is not None and args.method == "ss":
        log.warning("--weights is ignored by --method ss")
    if args.weights is not None and args.method != "ss":
        weights = os.fspath(args.weights)
        load_multibox_cached(weights, args.device)  # fail early with a clear message; workers inherit it
    return ProposalMethod(args.method, ss_config=ss_config, multibox_weights=weights, top_k=args.top_k,
                          dedupe_iou=None if args.dedupe_iou >= 1 else args.dedupe_iou, device=args.device)


def gather_inputs(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """(records or image paths, the input files an output may not overwrite)."""
    if args.annotations is not None and (args.inputs or args.source):
        raise InputError(None, "give images or --annotations, not both")
    if args.gt and args.annotations is None:
        raise InputError(None, "--gt needs --annotations")
    if args.images is not None and args.annotations is None:
        raise InputError(args.images, "--images goes with --annotations; give plain images as arguments")
    if args.annotations is not None:
        from detect.datasets import read_dataset

        records = list(read_dataset(args.annotations, args.images).records)
        protected = [os.fspath(args.annotations)]
    elif args.inputs or args.source:
        records = expand_inputs(args.inputs, source=args.source)
        protected = [os.fspath(p) for p in records if not is_url(p)]
        protected += [a[1:] for a in args.inputs if a.startswith("@") and os.path.isfile(a[1:])]
        if args.source:
            protected.append(args.source)
    else:
        raise InputError(None, "give image files/folders or --annotations (see --help)")
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(None, f"--limit must be >= 1, got {args.limit}")
        records = records[: args.limit]
    return records, protected


def format_stats(stats: Any, method: str) -> str:
    """The ``--gt`` table: one header line and one row."""
    cols = [("images", f"{stats.num_images}"), ("gt boxes", f"{stats.num_gt}"),
            ("boxes/img", f"{stats.boxes_per_image:.1f}"), ("recall@0.5", f"{stats.recall_50:.3f}"),
            ("recall@0.7", f"{stats.recall_70:.3f}"), ("ABO", f"{stats.abo:.3f}"), ("MABO", f"{stats.mabo:.3f}"),
            ("AR@100", f"{stats.ar_100:.3f}"), ("AR@1000", f"{stats.ar_1000:.3f}")]
    widths = [max(len(k), len(v)) for k, v in cols]
    head = "  ".join(k.rjust(w) for (k, _), w in zip(cols, widths))
    row = "  ".join(v.rjust(w) for (_, v), w in zip(cols, widths))
    return f"method {method}\n{head}\n{row}"


def compute(records: Sequence[Any], method: ProposalMethod, *, cache: Path | None,
            workers: int) -> tuple[list[CacheItem], list[Proposals]]:
    """Proposals for every record/path, through the cache when one is given."""
    from proposals.cache import as_items, build_cache, cache_dir, load_cached, propose_many

    items = as_items(records)
    if cache is None:
        return items, propose_many(method, items, workers=workers)
    folder = cache_dir(cache, method)
    stats = build_cache(items, method, folder, workers=workers)
    log.info("cache %s: %d computed, %d reused", folder, stats["computed"], stats["skipped"])
    return items, [load_cached(folder, item.image_id) for item in items]


def write_stdout(text: str) -> None:
    """Write to stdout; a closed pipe (``... | head``) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's exit-time flush does not fail again


def _propose_one(job: tuple[ProposalMethod, CacheItem]) -> Proposals:
    """Worker job: read one image (file or URL) and propose; InputError for an unusable image."""
    method, item = job
    return method(read_input(item.file))


def check_outputs(args: argparse.Namespace, protected: list[str]) -> None:
    """Refuse, before any work (or model), an --out that would overwrite an input or cannot be written."""
    from backbone.files import check_output
    from detect.runstore import parts_folder

    if args.resume and args.out is None:
        raise InputError(None, "--resume needs --out (the per-image results of a run live beside its --out)")
    if args.resume and (args.cache is not None or args.gt):
        raise InputError(None, "--resume is for plain runs; --cache resumes by itself")
    if args.weights is not None:
        protected = [*protected, os.fspath(args.weights)]
    if args.out is not None:
        check_output(args.out, inputs=protected)
        parts = parts_folder(args.out)
        if parts.exists() and not parts.is_dir():
            raise InputError(parts, "--out: this path is needed for the per-image results folder; move it")


def main(args: argparse.Namespace) -> int:
    workers = capped_workers(args.workers)
    records, protected = gather_inputs(args)
    check_outputs(args, protected)
    method = build_method(args)
    if args.cache is not None or args.gt:
        return _main_all_at_once(args, records, protected, method, workers)
    return _main_streaming(args, records, protected, method, workers)


def _main_streaming(args: argparse.Namespace, records: list, protected: list[str], method: ProposalMethod,
                    workers: int) -> int:
    """Each image's entry as soon as it is done (stdout JSON streamed, or --out via per-image results)."""
    import time

    from detect import runstore
    from detect.workpool import imap_ordered
    from proposals.cache import as_items

    items = as_items(records)
    ids = [getattr(r, "image_id", item.image_id) for r, item in zip(records, items)]
    store = None
    if args.out is not None:
        folder = runstore.parts_folder(args.out)
        fp = runstore.fingerprint(config={"method": method.describe()}, weights=None, multibox_weights=None,
                                  inputs=[item.file for item in items], world=1)
        if not args.resume and (folder / runstore.MANIFEST).exists():
            log.info("%s: results of an earlier unfinished run; starting over (--resume continues it)", folder)
        already = runstore.prepare(folder, fp, resume=args.resume)
        if already:
            log.info("resuming: %d of %d images done earlier", already, len(items))
        store = runstore.RankFile.open(folder, 0, 1)
    todo = [k for k in range(len(items)) if store is None or k not in store.done]
    ok = skipped = 0
    first = True
    start = time.perf_counter()
    if store is None:
        write_stdout("[")
    try:
        jobs = [(method, items[k]) for k in todo]
        for k, (_, props, err) in zip(todo, imap_ordered(_propose_one, jobs, workers=workers)):
            if err is not None:
                if args.strict:
                    raise err
                print(f"detect: error: {err}", file=sys.stderr, flush=True)
                skipped += 1
                if store is not None:
                    store.add_error(k, items[k].file, str(err))
                continue
            ok += 1
            entry = proposals_json(items[k], ids[k], props)
            if store is None:
                write_stdout(("" if first else ", ") + json.dumps(entry))
                first = False
            else:
                store.add_value(k, items[k].file, entry)
                write_stdout(f"{items[k].file}  {len(props)} proposals\n")
    except KeyboardInterrupt:
        hint = (f"; results so far are in {runstore.parts_folder(args.out)}: rerun with --resume to continue"
                if store is not None else "")
        print(f"detect: interrupted after {ok + skipped} of {len(items)} images{hint}", file=sys.stderr)
        return 130
    if store is None:
        write_stdout("]\n")
    else:
        ok, skipped = runstore.counts(runstore.parts_folder(args.out))
        if ok:
            _write_from_store(args.out, runstore.parts_folder(args.out), protected)
            log.info("wrote proposals of %d images to %s", ok, args.out)
    return summary(ok, skipped, len(items), time.perf_counter() - start)


def _write_from_store(out: Path, folder: Path, protected: list[str]) -> None:
    """The --out JSON list from the per-image results, in input order, atomically; then the folder goes."""
    import shutil

    from backbone.files import atomic_path
    from detect import runstore

    with atomic_path(out, inputs=protected) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        first = True
        for rec in runstore.raw_records(folder):
            if "value" in rec:
                f.write(("" if first else ", ") + json.dumps(rec["value"]))
                first = False
        f.write("]")
    shutil.rmtree(folder, ignore_errors=True)


def _main_all_at_once(args: argparse.Namespace, records: list, protected: list[str], method: ProposalMethod,
                      workers: int) -> int:
    """--cache / --gt: through the proposal cache (resumable by itself) and over the whole set."""
    items, results = compute(records, method, cache=args.cache, workers=workers)
    ids = [getattr(r, "image_id", item.image_id) for r, item in zip(records, items)]
    entries = [proposals_json(item, image_id, props) for item, image_id, props in zip(items, ids, results)]
    if args.out is not None:
        write_json(args.out, entries, inputs=protected)
        log.info("wrote proposals of %d images to %s", len(entries), args.out)
    elif not args.gt:
        write_stdout(json.dumps(entries) + "\n")
    if args.gt:
        from proposals.metrics import proposal_recall

        keep = [~r.ignore.bool() for r in records]
        stats = proposal_recall([p.boxes for p in results], [r.boxes[k] for r, k in zip(records, keep)],
                                [r.labels[k] for r, k in zip(records, keep)])
        print(format_stats(stats, method.name))
    return 0
