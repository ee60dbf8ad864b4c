"""Proposal defaults the command line shows, torch-free so ``detect proposals --help`` and ``detect multibox
--help`` need no torch; :mod:`proposals.merge` and :mod:`proposals.multibox` (the code they configure)
re-export them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: Default IoU above which a lower-ranked box counts as a duplicate (see proposals.merge).
DEDUPE_IOU = 0.7
#: MultiBox boxes added per image (GoogLeNet paper, section 8).
MULTIBOX_TOP_K = 200
#: Superpixel scale of the paper's selective search (section 8: "super-pixel size by 2x").
PAPER_SUPERPIXEL_SCALE = 2.0
#: The proposal methods, as named on the command line (proposals.merge.METHODS holds their functions).
METHOD_NAMES = ("ss", "multibox", "paper")


@dataclass(frozen=True)
class MultiBoxConfig:
    """Everything needed to rebuild a MultiBox model (stored in its checkpoint)."""

    num_priors: int = 800  # ~800 priors (Erhan et al. 2014 / "Scalable, High-Quality Object Detection")
    input_size: int = 224  # GoogLeNet's receptive field, Table 1; images are warped to this square
    variant: str = "paper"  # backbone variant: "paper" (Table 1) or "torchvision"
    head_channels: int = 128  # 1x1 reduction (+ BatchNorm) before the grid pooling (see module docstring)
    head_grid: int = 4  # grid of the adaptive pooling: 4x4 cells keep coarse location
    dropout: float = 0.4  # as GoogLeNet's classifier (Table 1: dropout 40%)
    alpha: float = 0.3  # weight of the location term (Erhan et al. 2014: alpha = 0.3)
    match_on: str = "priors"  # "priors" or "predictions": which boxes the bipartite matching compares
    top_k: int = 200  # boxes kept per image at inference (GoogLeNet paper, sec. 8)
    conf_prior: float = 0.01  # initial confidence (logit bias), so 800 negatives do not swamp early training

    def __post_init__(self) -> None:
        if self.match_on not in ("priors", "predictions"):
            raise ValueError(f"match_on must be 'priors' or 'predictions', not {self.match_on!r}")
        if self.num_priors < 1 or self.input_size < 32 or self.top_k < 1:
            raise ValueError("num_priors and top_k must be >= 1 and input_size >= 32")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "MultiBoxConfig":
        names = {f.name for f in dataclasses.fields(MultiBoxConfig)}
        return MultiBoxConfig(**{k: v for k, v in d.items() if k in names})
