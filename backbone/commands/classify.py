"""Top-k classes of images with a GoogLeNet classifier (one centre crop, section 6 of the paper).

Each image is read as RGB (grayscale, RGBA, 16-bit and EXIF rotation handled), resized to the
checkpoint's shorter side (256), centre-cropped (224) and normalised; the table lists the top-k
class names and softmax probabilities per image. Inputs are files, folders, quoted globs and ``@list.txt``
files, as for ``detect run``. Images are read a batch at a time and each image's block is printed as soon
as its batch is classified (memory stays flat on any number of images). An unreadable image is one stderr
line (``backbone: error: FILE: problem``) and is skipped; the run goes on and exits 1 at the end (2 when no
image at all could be read); ``--strict`` stops at the first bad file instead.

Weights: ``imagenet`` (default) is torchvision's ImageNet GoogLeNet file ``googlenet-1378be20.pth``
from torch hub's cache (downloaded when missing unless GOINGDEEPER_OFFLINE=1; offline, the error names
the file and the folder to put it in); or a path to one of our checkpoints (its own class names and
preprocessing) or to a raw torchvision-layout state dict.

Examples::

    backbone classify photo.jpg                               # top-5, ImageNet weights
    backbone classify a.jpg photos/ 'more/*.png' --top-k 3 --json
    backbone classify photo.jpg --weights runs/g1/model.pt --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Iterator

from backbone.config import MAX_PIXELS, VARIANTS
from backbone.errors import InputError

log = logging.getLogger(__name__)

BATCH = 32  # images per forward pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE|DIR|GLOB|@LIST",
                        help="image files, folders, quoted globs, @files listing paths")
    parser.add_argument("--weights", default="imagenet", metavar="imagenet|PATH",
                        help="'imagenet' (torchvision's file via torch hub's cache) or a checkpoint path "
                             "(default: %(default)s)")
    parser.add_argument("--variant", choices=VARIANTS, default=None,
                        help="refuse weights of another variant (default: the weights' own)")
    parser.add_argument("--top-k", "--topk", dest="topk", type=int, default=5, metavar="K",
                        help="classes per image (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table (one list, at the end)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help="refuse larger images (default: %(default)s)")


def _batches(paths: list[Path | str], preprocessing, max_pixels: int, strict: bool,
             bad: list[Path]) -> Iterator[tuple[list[Path], list]]:
    """Read and preprocess ``BATCH`` images at a time; bad ones are reported (one stderr line), recorded
    in ``bad`` and skipped, or raised with ``strict``."""
    from backbone.inputs import read_input  # files, or http(s) URLs downloaded to a temporary file

    chunk_paths, chunk = [], []
    for path in paths:
        try:
            chunk.append(preprocessing(read_input(path, max_pixels=max_pixels)))
        except InputError as err:
            if strict:
                raise
            print(f"backbone: error: {err}", file=sys.stderr, flush=True)
            bad.append(path)
            continue
        chunk_paths.append(path)
        if len(chunk) == BATCH:
            yield chunk_paths, chunk
            chunk_paths, chunk = [], []
    if chunk:
        yield chunk_paths, chunk


def main(args: argparse.Namespace) -> int:
    import torch

    from backbone.device import describe_device, resolve_device
    from backbone.inputs import expand_inputs
    from backbone.weights import load_classifier

    if args.topk < 1:
        raise InputError(None, f"--top-k must be at least 1, got {args.topk}")
    paths = expand_inputs(args.images)
    device = resolve_device(args.device)
    model, class_names, preprocessing = load_classifier(args.weights, variant=args.variant)
    model.to(device)
    log.info("classifying %d image(s) with %s (%d classes) on %s", len(paths), args.weights, len(class_names),
             describe_device(args.device, device))
    k = min(args.topk, len(class_names))
    results, bad = [], []
    with torch.inference_mode():
        for chunk_paths, chunk in _batches(paths, preprocessing, args.max_pixels, args.strict, bad):
            x = torch.stack(chunk).to(device)
            # B x 3 x crop x crop
            probs = torch.softmax(model(x).float(), dim=1).cpu()
            # B x num_classes
            top = torch.topk(probs, k, dim=1)
            for path, values, indices in zip(chunk_paths, top.values, top.indices):
                item = {"image": str(path), "top": [
                    {"rank": r + 1, "index": int(i), "class": class_names[int(i)], "probability": float(p)}
                    for r, (p, i) in enumerate(zip(values, indices))]}
                if args.json:
                    results.append(item)
                else:
                    sys.stdout.write(format_table([item]) + "\n")
                    sys.stdout.flush()
    if args.json and results:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    done = len(paths) - len(bad)
    if bad:
        log.info("%d of %d images; %d skipped, listed above", done, len(paths), len(bad))
        return 2 if done == 0 else 1
    return 0


def format_table(results: list[dict]) -> str:
    """One block per image: rank, probability in percent, class name."""
    lines = []
    for item in results:
        lines.append(item["image"])
        for t in item["top"]:
            lines.append(f"  {t['rank']:>2}  {100 * t['probability']:6.2f}%  {t['class']}")
    return "\n".join(lines)
