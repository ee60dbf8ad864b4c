"""Top-k classes of images with a GoogLeNet classifier (one centre crop, section 6 of the paper).

Each image is read as RGB (grayscale, RGBA, 16-bit and EXIF rotation handled), resized to the
checkpoint's shorter side (256), centre-cropped (224) and normalised; the table lists the top-k
class names and softmax probabilities per image. All images are read before anything is printed, so a
bad file fails with one line and exit code 2 and no partial table.

Weights: ``imagenet`` (default) is torchvision's ImageNet GoogLeNet file ``googlenet-1378be20.pth``
from torch hub's cache (downloaded when missing unless GOINGDEEPER_OFFLINE=1; offline, the error names
the file and the folder to put it in); or a path to one of our checkpoints (its own class names and
preprocessing) or to a raw torchvision-layout state dict.

Examples::

    backbone classify photo.jpg                               # top-5, ImageNet weights
    backbone classify a.jpg b.png --topk 3 --json             # JSON on stdout
    backbone classify photo.jpg --weights runs/g1/model.pt --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from backbone.errors import InputError
from backbone.googlenet import VARIANTS
from backbone.images import MAX_PIXELS, read_image
from backbone.weights import load_classifier

BATCH = 32  # images per forward pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--weights", default="imagenet", metavar="imagenet|PATH",
                        help="'imagenet' (torchvision's file via torch hub's cache) or a checkpoint path [imagenet]")
    parser.add_argument("--variant", choices=VARIANTS, default=None,
                        help="refuse weights of another variant [default: the weights' own]")
    parser.add_argument("--topk", type=int, default=5, metavar="K", help="classes per image [5]")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="[cpu]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse larger images [{MAX_PIXELS:,}]")


def main(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise InputError(None, f"--topk must be at least 1, got {args.topk}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA device is available; use --device cpu")
    model, class_names, preprocessing = load_classifier(args.weights, variant=args.variant)
    model.to(args.device)
    # Every image is read and preprocessed (3 x 224 x 224 floats each) before anything is printed, so a
    # bad file fails with one line and no partial table.
    inputs = [preprocessing(read_image(path, max_pixels=args.max_pixels)) for path in args.images]
    k = min(args.topk, len(class_names))
    results = []
    with torch.inference_mode():
        for start in range(0, len(inputs), BATCH):
            x = torch.stack(inputs[start:start + BATCH]).to(args.device)
            # B x 3 x crop x crop
            probs = torch.softmax(model(x).float(), dim=1).cpu()
            # B x num_classes
            top = torch.topk(probs, k, dim=1)
            for path, values, indices in zip(args.images[start:start + BATCH], top.values, top.indices):
                results.append({"image": str(path), "top": [
                    {"rank": r + 1, "index": int(i), "class": class_names[int(i)], "probability": float(p)}
                    for r, (p, i) in enumerate(zip(values, indices))]})
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(results) + "\n")
    return 0


def format_table(results: list[dict]) -> str:
    """One block per image: rank, probability in percent, class name."""
    lines = []
    for item in results:
        lines.append(item["image"])
        for t in item["top"]:
            lines.append(f"  {t['rank']:>2}  {100 * t['probability']:6.2f}%  {t['class']}")
    return "\n".join(lines)
