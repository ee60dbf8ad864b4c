"""The ``backbone`` command: the GoogLeNet classifier on its own.

Examples:

    backbone summary --variant paper                     # per-layer table beside the paper's Table 1
    backbone classify photo.jpg                           # top-5 with torchvision's ImageNet weights
    backbone train --data imagenet/train --out runs/g1    # the paper's recipe on an ImageFolder tree
    backbone eval --data imagenet/val --crops 144 --weights runs/g1/model.pt
"""
# Each subcommand lives in ``backbone/commands/<name>.py`` with ``add_arguments(parser)`` and
# ``main(args) -> int``; this file only wires them together.

from __future__ import annotations

import argparse
import sys

from backbone import console

#: subcommand -> (module under backbone.commands, one-line help)
COMMANDS = {
    "summary": ("summary", "per-layer table: output shape, parameters, mult-adds vs Table 1"),
    "classify": ("classify", "top-5 classes of images"),
    "train": ("train", "train on an ImageFolder tree with the paper's recipe"),
    "eval": ("evaluate", "top-1/top-5 with 1, 10 or 144 crops and model ensembles"),
}


def build_parser(argv: list[str] | None = None, *, load: str = "chosen") -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` (default: sys.argv) is imported unless
    ``load="all"``."""
    return console.build_parser("backbone", __doc__, "backbone", COMMANDS, argv, load=load)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    return console.run_command(args.func, args, "backbone")


if __name__ == "__main__":
    sys.exit(main())
