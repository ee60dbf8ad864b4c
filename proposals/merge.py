"""The GoogLeNet paper's proposals: selective search at doubled superpixel size + 200 MultiBox boxes.

GoogLeNet paper, section 8: "the region proposal step is improved by combining the Selective Search
approach with multi-box predictions ... we increased the super-pixel size by 2x ... [and] added 200
region proposals coming from multi-box". The paper does not say how the two lists are combined; ours:

* **Order**: MultiBox boxes (by confidence) first, then selective search boxes (by their own rank). The
  MultiBox boxes are the few high-confidence ones the paper adds on purpose, so they are never dropped in
  favour of a selective-search box; scores stay those of each source (not comparable across sources).
* **Deduplication across sources only**: a selective-search box is dropped when it overlaps a MultiBox
  box with IoU > ``dedupe_iou`` (default 0.7: a near-copy of a box already proposed). Boxes of one source
  are not compared with each other: a greedy NMS at 0.7 over the whole list halved the paper method's
  boxes on 16 coco128 images (1783 -> 922 per image) and cost recall (0.597 -> 0.569 at IoU 0.5,
  0.361 -> 0.319 at 0.7), and the paper's "60% of R-CNN's proposals" is the 2x superpixel size alone.
  ``dedupe_iou=None`` concatenates without deduplication.
* **No MultiBox model**: ``"paper"`` falls back to selective search alone (still at superpixel scale 2)
  and logs a warning once per process, so a missing ``--weights`` never fails silently.

:data:`METHODS` maps method names to functions with one keyword signature; :class:`ProposalMethod` is a
frozen, picklable description of a method + its settings (what caches hash and worker processes run).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torchvision.ops import box_iou

from proposals.config import DEDUPE_IOU, METHOD_NAMES, MULTIBOX_TOP_K, PAPER_SUPERPIXEL_SCALE
from proposals.structures import SOURCES, Proposals

log = logging.getLogger(__name__)



def merge_proposals(parts: list[Proposals], *, dedupe_iou: float | None = DEDUPE_IOU) -> Proposals:
    """Combine proposal lists the paper's way: MultiBox boxes first, then the other boxes not duplicating one.

    Boxes are ordered by source (MultiBox before selective search), keeping each part's own order within
    a source, whatever order ``parts`` come in. A selective-search box whose IoU with some MultiBox box
    exceeds ``dedupe_iou`` is dropped (``None``: keep all). Boxes of one source are never compared with
    each other.

    Returns:
        :class:`Proposals` (boxes ``Tensor[P, 4]`` xyxy pixels, scores, sources).
    """
    merged = Proposals.cat(parts)
    rank = torch.tensor([0 if s == "multibox" else 1 for s in SOURCES])  # multibox before ss
    merged = merged.select(torch.argsort(rank[merged.sources], stable=True))
    is_mb = merged.sources == SOURCES.index("multibox")
    if dedupe_iou is None or not is_mb.any() or is_mb.all():
        return merged
    overlap = box_iou(merged.boxes[~is_mb], merged.boxes[is_mb]).max(dim=1).values
    keep = torch.ones(len(merged), dtype=torch.bool)
    keep[~is_mb] = ~(overlap > dedupe_iou)  # NaN (degenerate boxes) is not a duplicate
    return merged.select(keep)


def default_ss_config(method: str) -> Any:
    """The selective search config each method uses when none is given: R-CNN's fast mode (the GoogLeNet
    paper's proposals), scale 1 or 2."""
    from proposals.selective_search import SelectiveSearchConfig

    return SelectiveSearchConfig.rcnn("fast", superpixel_scale=PAPER_SUPERPIXEL_SCALE if method == "paper" else 1.0)


def ss_proposals(image: np.ndarray, *, ss_config: Any = None, multibox: Any = None,
                 top_k: int = MULTIBOX_TOP_K, dedupe_iou: float | None = DEDUPE_IOU,
                 selective_search: Proposals | None = None) -> Proposals:
    """Selective search alone (``multibox``, ``top_k`` and ``dedupe_iou`` are ignored); ``selective_search``
    when this image's boxes were already computed (in a worker process, a cache)."""
    if selective_search is not None:
        return selective_search
    from proposals.selective_search import selective_search as search

    return search(image, ss_config if ss_config is not None else default_ss_config("ss"))


def multibox_proposals(image: np.ndarray, *, ss_config: Any = None, multibox: Any = None,
                       top_k: int = MULTIBOX_TOP_K, dedupe_iou: float | None = DEDUPE_IOU,
                       selective_search: Proposals | None = None) -> Proposals:
    """The ``top_k`` MultiBox boxes (``ss_config``, ``dedupe_iou`` and ``selective_search`` are ignored).
    Needs ``multibox``."""
    if multibox is None:
        raise ValueError("method 'multibox' needs a MultiBox model (--weights)")
    return multibox.propose(image, top_k=top_k)


@functools.lru_cache(maxsize=1)
def _warn_no_multibox() -> None:
    log.warning("no MultiBox model given: 'paper' proposals are selective search alone "
                "(superpixel scale %g); pass --weights for the paper's +%d MultiBox boxes",
                PAPER_SUPERPIXEL_SCALE, MULTIBOX_TOP_K)


def paper_proposals(image: np.ndarray, *, ss_config: Any = None, multibox: Any = None,
                    top_k: int = MULTIBOX_TOP_K, dedupe_iou: float | None = DEDUPE_IOU,
                    selective_search: Proposals | None = None) -> Proposals:
    """Selective search (superpixel scale 2) + the ``top_k`` MultiBox boxes, deduplicated.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB.
        ss_config: a ``SelectiveSearchConfig`` (default: fast mode, ``superpixel_scale=2``).
        multibox: a :class:`~proposals.multibox.MultiBox`, or None (fall back to selective search with a
            logged warning).
        top_k: MultiBox boxes added (200 in the paper).
        dedupe_iou: see :func:`dedupe`.
        selective_search: this image's selective-search proposals when already computed (in a worker
            process, a cache); computed here with ``ss_config`` otherwise.

    Returns:
        :class:`Proposals`: MultiBox boxes first (source 1), then selective search (source 0).
    """
    ss = ss_proposals(image, ss_config=ss_config if ss_config is not None else default_ss_config("paper"),
                      selective_search=selective_search)
    if multibox is None:
        _warn_no_multibox()
        return merge_proposals([ss], dedupe_iou=dedupe_iou)
    return merge_proposals([multibox.propose(image, top_k=top_k), ss], dedupe_iou=dedupe_iou)


#: Proposal methods by name. Each: ``f(image, *, ss_config, multibox, top_k, dedupe_iou, selective_search)
#: -> Proposals``.
METHODS: dict[str, Callable[..., Proposals]] = {
    "ss": ss_proposals,
    "multibox": multibox_proposals,
    "paper": paper_proposals,
}
assert tuple(METHODS) == METHOD_NAMES  # the command line's names (proposals.config) are these keys


@functools.lru_cache(maxsize=2)
def load_multibox_cached(path: str, device: str = "cpu") -> Any:
    """:func:`proposals.multibox.load_multibox`, once per process (worker processes forked after a call
    in the parent inherit the loaded model)."""
    from proposals.multibox import load_multibox

    return load_multibox(path, device=device)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ProposalMethod:
    """A proposal method with all its settings; picklable, so worker processes can run it.

    Attributes:
        name: a key of :data:`METHODS`.
        ss_config: ``SelectiveSearchConfig`` or None for the method's default (:func:`default_ss_config`).
        multibox_weights: path of a MultiBox checkpoint (required for ``"multibox"``, optional for
            ``"paper"``); loaded once per process.
        top_k: MultiBox boxes per image.
        dedupe_iou: see :func:`dedupe`.
        device: where MultiBox runs.
    """

    name: str
    ss_config: Any = None
    multibox_weights: str | None = None
    top_k: int = MULTIBOX_TOP_K
    dedupe_iou: float | None = DEDUPE_IOU
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown proposal method {self.name!r}; choose from {', '.join(METHODS)}")
        if self.name == "multibox" and self.multibox_weights is None:
            raise ValueError("method 'multibox' needs MultiBox weights")
        if self.name == "paper" and self.multibox_weights is None:
            _warn_no_multibox()  # here, once, rather than in each worker process (forked ones inherit this)

    def resolved_ss_config(self) -> Any:
        """The selective search config actually used (None for ``"multibox"``)."""
        if self.name == "multibox":
            return None
        return self.ss_config if self.ss_config is not None else default_ss_config(self.name)

    def describe(self) -> dict[str, Any]:
        """JSON-able settings that determine the output (the device does not); weights by content hash."""
        ss = self.resolved_ss_config()
        uses_mb = self.name != "ss" and self.multibox_weights is not None
        from proposals.selective_search import ALGORITHM_VERSION

        return {
            "method": self.name,
            "ss_config": None if ss is None else dataclasses.asdict(ss),
            "ss_algorithm": None if ss is None else ALGORITHM_VERSION,
            "multibox_weights_sha256": _file_sha256(self.multibox_weights) if uses_mb else None,
            "top_k": self.top_k if uses_mb else None,
            "dedupe_iou": self.dedupe_iou if self.name == "paper" else None,
        }

    def config_hash(self) -> str:
        """sha256 (hex) of :meth:`describe`, canonical JSON."""
        text = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def __call__(self, image: np.ndarray) -> Proposals:
        """Proposals for one ``np.ndarray[H, W, 3]`` uint8 RGB image."""
        multibox = None
        if self.name != "ss" and self.multibox_weights is not None:
            multibox = load_multibox_cached(os.fspath(self.multibox_weights), self.device)
        return METHODS[self.name](image, ss_config=self.resolved_ss_config(), multibox=multibox,
                                  top_k=self.top_k, dedupe_iou=self.dedupe_iou)
