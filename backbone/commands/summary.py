"""Per-layer table of GoogLeNet (output shape, parameters, mult-adds) beside Table 1 of the paper.

Mult-adds are counted by forward hooks on every convolution and linear layer for one image; the
auxiliary heads (training only) are listed after the totals and not counted in them. Table 1's
parameters are in K = 1024, its mult-adds in M = 10^6; ours are printed the same way.

Examples::

    backbone summary                                  # paper variant (Table 1), 224 x 224
    backbone summary --variant torchvision            # torchvision's layout (BatchNorm, 3x3 "5x5")
    backbone summary --input-size 320                 # the same network on a larger input
"""

from __future__ import annotations

import argparse
import sys

from backbone.errors import InputError
from backbone.config import VARIANTS

#: Smallest input that survives the five stride-2 stages and the 7x7 conv (1 x 1 at the end).
MIN_INPUT_SIZE = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=VARIANTS, default="paper",
                        help="'paper' (Table 1) or 'torchvision' (its layout and weights) [paper]")
    parser.add_argument("--input-size", type=int, default=224, metavar="PIXELS",
                        help="square input side in pixels [224, as in Table 1]")


def main(args: argparse.Namespace) -> int:
    if args.input_size < MIN_INPUT_SIZE:
        raise InputError(None, f"--input-size {args.input_size} is too small; GoogLeNet needs at least "
                               f"{MIN_INPUT_SIZE} pixels")
    if args.input_size > 4096:
        raise InputError(None, f"--input-size {args.input_size} is above 4096; choose a smaller size")
    from backbone.weights import googlenet
    from backbone.summary import format_summary, summarize

    model = googlenet(variant=args.variant)
    sys.stdout.write(format_summary(summarize(model, args.input_size)) + "\n")
    return 0
