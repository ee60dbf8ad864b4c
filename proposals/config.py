"""Proposal defaults the command line shows, torch-free so ``detect proposals --help`` needs no torch;
:mod:`proposals.merge` (the code they configure) re-exports them."""

from __future__ import annotations

#: Default IoU above which a lower-ranked box counts as a duplicate (see proposals.merge).
DEDUPE_IOU = 0.7
#: MultiBox boxes added per image (GoogLeNet paper, section 8).
MULTIBOX_TOP_K = 200
#: Superpixel scale of the paper's selective search (section 8: "super-pixel size by 2x").
PAPER_SUPERPIXEL_SCALE = 2.0
#: The proposal methods, as named on the command line (proposals.merge.METHODS holds their functions).
METHOD_NAMES = ("ss", "multibox", "paper")
