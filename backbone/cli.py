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
import importlib
import sys

from backbone.console import run_command

#: subcommand -> (module under backbone.commands, one-line help)
COMMANDS = {
    "summary": ("summary", "per-layer table: output shape, parameters, mult-adds vs Table 1"),
    "classify": ("classify", "top-5 classes of images"),
    "train": ("train", "train on an ImageFolder tree with the paper's recipe"),
    "eval": ("evaluate", "top-1/top-5 with 1, 10 or 144 crops and model ensembles"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backbone", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"backbone.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, "backbone")


if __name__ == "__main__":
    sys.exit(main())
