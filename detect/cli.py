"""The ``detect`` command: detection, proposals, training, evaluation.

Examples:

    detect run photo.jpg                          # zero-shot ILSVRC-200 detector (ImageNet GoogLeNet)
    detect run photos/ --weights a.pt b.pt --out dets.json --save-vis vis/
    detect proposals photo.jpg --method ss --out boxes.json
    detect train --annotations ann.json --images imgs/ --out runs/rc1
    detect multibox train --annotations ann.json --images imgs/ --out runs/mb
    detect eval --annotations ann.json --results dets.json
    detect demo                                   # offline: synthetic data, train, evaluate, detect
"""
# Each subcommand lives in ``detect/commands/<name>.py`` with ``add_arguments(parser)`` and
# ``main(args) -> int``; this file only wires them together.

from __future__ import annotations

import argparse
import sys

from backbone import console

#: subcommand -> (module under detect.commands, one-line help)
COMMANDS = {
    "run": ("run", "detect objects in images or folders"),
    "proposals": ("proposals", "compute region proposals (selective search, MultiBox, both)"),
    "train": ("train", "fine-tune a region classifier on cached proposals"),
    "multibox": ("multibox", "train or run the MultiBox proposal network"),
    "eval": ("evaluate", "evaluate detections against COCO or ILSVRC ground truth"),
    "demo": ("demo", "offline demo: draw a synthetic set, train from scratch, evaluate, detect"),
}


def build_parser(argv: list[str] | None = None, *, load: str = "chosen") -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` (default: sys.argv) is imported unless
    ``load="all"``."""
    return console.build_parser("detect", __doc__, "detect", COMMANDS, argv, load=load)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    return console.run_command(args.func, args, "detect")


if __name__ == "__main__":
    sys.exit(main())
