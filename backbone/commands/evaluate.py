"""`backbone eval`: top-1/top-5 accuracy on an ImageFolder tree with section 7's multi-crop testing.

``--crops 1``: centre 224 crop of the image resized to 256 (the checkpoint's own sizes);
``--crops 10``: 4 corners + centre at 256, and mirrors; ``--crops 144``: 4 scales (256, 288, 320, 352)
x 3 squares x (4 corners + centre + whole square) x mirrors. Softmax probabilities are averaged over the
crops and over all ``--weights`` (an ensemble; their class lists must agree). Class subfolders of
``--data`` are matched to the model's classes by name (ImageNet wnid folders such as ``n01440764``
work with ``--weights imagenet``); a folder the model does not know is an error.
The paper's single-model top-5 errors: 10.07 % (1 crop), 9.15 % (10), 7.89 % (144).

Examples::

    backbone eval --data imagenet/val --crops 144 --weights runs/g1/model.pt
    backbone eval --data imagenet/val --crops 10 --weights imagenet
    backbone eval --data imagenet/val --weights runs/g1/model.pt runs/g2/model.pt --out ensemble.json
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from backbone.config import CROP_SCHEMES
from backbone.errors import InputError

if TYPE_CHECKING:  # torch-importing modules load when the command runs, not for --help
    from backbone.multicrop import MultiCropResult

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="ImageFolder tree DIR/<class>/<image>")
    parser.add_argument("--crops", type=int, choices=CROP_SCHEMES, default=1, help="crops per image (default 1)")
    parser.add_argument("--weights", nargs="+", default=["imagenet"], metavar="CKPT",
                        help="one or more checkpoints (an ensemble), or 'imagenet' (default)")
    parser.add_argument("--batch-size", type=int, default=256, help="crops per forward pass (default 256)")
    parser.add_argument("--workers", type=int, default=4, help="image loading processes (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--out", default=None, metavar="JSON", help="also write the results as JSON")


def _label_space(names: list[str], weights: str, data: Path) -> list[str]:
    """The model's class names, or ImageNet wnids when the data is in wnid folders and the model is ImageNet's."""
    from backbone.folder import find_classes
    from backbone.weights import imagenet_classes, imagenet_wnids

    if names == imagenet_classes():
        folders = find_classes(data)
        wnids = set(imagenet_wnids())
        if all(f in wnids for f in folders):
            return imagenet_wnids()
    return names


def format_table(result: MultiCropResult, weights: list[str]) -> str:
    """A small table: what was evaluated and its accuracies and errors in percent."""
    label = weights[0] if len(weights) == 1 else f"ensemble of {len(weights)}"
    head = f"{'weights':<30} {'crops':>5} {'images':>7} {'top-1':>7} {'top-5':>7} {'top-1 err':>9} {'top-5 err':>9}"
    row = (f"{label[-30:]:<30} {result.crops:>5} {result.images:>7} {100 * result.top1:>6.2f}% "
           f"{100 * result.top5:>6.2f}% {100 * result.top1_error:>8.2f}% {100 * result.top5_error:>8.2f}%")
    return head + "\n" + row


def main(args: argparse.Namespace) -> int:
    from backbone.device import resolve_device
    from backbone.files import write_json
    from backbone.folder import ImageFolder
    from backbone.multicrop import evaluate_multicrop
    from backbone.weights import load_classifier

    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise InputError(None, f"--batch-size must be at least 1, got {args.batch_size}")
    models, preprocessings, first_names = [], [], None
    for w in args.weights:
        model, names, preprocessing = load_classifier(w)
        if first_names is None:
            first_names = names
        elif names != first_names:
            differ = "a different number of" if len(names) != len(first_names) else "different"
            raise InputError(w, f"has {differ} classes than {args.weights[0]} ({len(names)} vs "
                                f"{len(first_names)}); an ensemble needs the same class list")
        models.append(model)
        preprocessings.append(preprocessing)
    assert first_names is not None
    label_space = _label_space(first_names, args.weights[0], Path(args.data))
    dataset = ImageFolder(args.data, class_names=label_space, classes_from=args.weights[0])
    log.info("evaluating %d model(s) on %d images with %d crops each", len(models), len(dataset), args.crops)
    result = evaluate_multicrop(models, preprocessings, dataset.samples, crops=args.crops,
                                batch_size=args.batch_size, workers=args.workers, device=device)
    print(format_table(result, args.weights))
    if args.out:
        write_json(args.out, {"data": os.fspath(args.data), "weights": list(args.weights), **result.to_dict()},
                   indent=2, inputs=[w for w in args.weights if w != "imagenet"])
    return 0
