"""Selective search region proposals (Uijlings et al. 2013, "Selective Search for Object Recognition").

The GoogLeNet detector (Szegedy et al. 2014, section 8) takes R-CNN's selective search in "fast" mode with
the superpixel size doubled (``superpixel_scale=2``, about half the proposals). The steps:

1. resize the image to at most ``max_width`` pixels wide (R-CNN: 500), boxes are mapped back at the end;
2. per colour space, Felzenszwalb–Huttenlocher initial regions for each ``k`` (:mod:`proposals.ss_segment`);
3. per segmentation, region features (:mod:`proposals.ss_features`) and, per similarity set, hierarchical
   grouping (:mod:`proposals.ss_grouping`): every region formed is a box;
4. ranking (Uijlings et al. section 4.1): in each strategy the region formed by the last merge (the whole
   image) has hierarchy level 1, the one before it 2, ...; priority = level x uniform random in [0, 1)
   (seeded); all strategies are pooled, sorted by priority (lowest first), and duplicate boxes are
   removed keeping the best-ranked copy;
5. boxes smaller than ``min_size`` on either side (original pixels) are dropped; the whole-image box is
   always kept, so every image, even a 1x1 or a uniform one, yields at least one proposal.

Strategies (``SelectiveSearchConfig.strategy``), Uijlings et al. section 5.2 / R-CNN:

* ``"fast"``: colour spaces {HSV, Lab} x similarities {C+T+S+F, T+S+F} x k in {50, 100} (8 strategies);
* ``"quality"``: {HSV, Lab, rgI, H, I} x {C+T+S+F, T+S+F, F+S, F} x k in {50, 100, 150, 300} (80);
* ``"single"``: HSV, C+T+S+F, k = 100.

Deviations: texture histograms bin signed derivatives along 4 axes (same content as 8 orientations, see
:mod:`proposals.ss_features`); Felzenszwalb edge weights are quantised to 1/16 grey level (compiled path).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from backbone.images import read_image
from proposals.ss_features import colour_bins, region_features, texture_bins
from proposals.ss_grouping import hierarchical_grouping
from proposals.ss_segment import felzenszwalb_multi, convert_colour
from proposals.types import Proposals

log = logging.getLogger(__name__)

#: strategy name -> (colour spaces, similarity sets, Felzenszwalb k values); Uijlings et al. section 5.2.
STRATEGIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = {
    "fast": (("hsv", "lab"), ("CTSF", "TSF"), (50, 100)),
    "quality": (("hsv", "lab", "rgi", "h", "i"), ("CTSF", "TSF", "FS", "F"), (50, 100, 150, 300)),
    "single": (("hsv",), ("CTSF",), (100,)),
}


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Settings of :func:`selective_search`; the defaults are R-CNN's "fast" mode (Girshick et al. 2014)."""

    strategy: str = "fast"  # "fast" | "quality" | "single" (Uijlings et al. section 5.2), see STRATEGIES
    superpixel_scale: float = 1.0  # multiplies Felzenszwalb k and min size; GoogLeNet paper section 8 uses 2
    max_width: int | None = 500  # R-CNN resizes images to width 500 before selective search; None = never
    # drop boxes narrower or lower than this, in original pixels (R-CNN drops < 20 px at the 500-px scale);
    # the whole-image box is always kept. 0 keeps everything (as OpenCV does): more recall of small objects
    min_size: int = 20
    seed: int = 0  # seeds the random part of the ranking (Uijlings et al. section 4.1)
    sigma: float = 0.8  # Felzenszwalb pre-smoothing (Uijlings et al. / R-CNN)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")
        if self.superpixel_scale <= 0:
            raise ValueError(f"superpixel_scale must be > 0, got {self.superpixel_scale}")
        if self.max_width is not None and self.max_width < 1:
            raise ValueError(f"max_width must be >= 1 or None, got {self.max_width}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept ``uint8`` HxW (grey), HxWx1, HxWx3 (RGB) or HxWx4 (RGBA, alpha dropped); return HxWx3 RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _colour_space_boxes(image: np.ndarray, space: str, similarities: tuple[str, ...], ks: tuple[int, ...],
                        scale: float, sigma: float) -> list[np.ndarray]:
    """Boxes of every strategy that uses colour space ``space``, one ``float64[M, 4]`` array per (k, sim),
    in creation order (see :func:`proposals.ss_grouping.hierarchical_grouping`)."""
    converted = convert_colour(image, space)
    ks_scaled = tuple(k * scale for k in ks)
    labels = felzenszwalb_multi(converted, ks_scaled, sigma=sigma,
                                min_sizes=tuple(max(1, round(k)) for k in ks_scaled))
    cbins, tbins = colour_bins(converted), texture_bins(converted)
    area = float(image.shape[0] * image.shape[1])
    out = []
    for lab in labels:
        feats = region_features(lab, cbins, tbins)
        for sim in similarities:
            out.append(hierarchical_grouping(feats, sim, area))
    return out


def _rank(per_strategy: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool strategies; returns unique boxes ``float64[N, 4]`` sorted by priority and the priorities."""
    boxes, priority = [], []
    for index, b in enumerate(per_strategy):
        level = np.arange(b.shape[0], 0, -1, dtype=np.float64)  # last merge (whole image) = level 1
        rng = np.random.default_rng([seed, index])  # one stream per strategy: parallel runs stay deterministic
        boxes.append(b)
        priority.append(level * rng.random(b.shape[0]))
    all_boxes = np.concatenate(boxes)
    all_priority = np.concatenate(priority)
    order = np.argsort(all_priority, kind="stable")
    all_boxes, all_priority = all_boxes[order], all_priority[order]
    _, first = np.unique(all_boxes, axis=0, return_index=True)  # first = best-ranked copy
    keep = np.sort(first)
    return all_boxes[keep], all_priority[keep]


def selective_search_arrays(image: np.ndarray, config: SelectiveSearchConfig = SelectiveSearchConfig(), *,
                            workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`selective_search` returning numpy: ``float32[N, 4]`` boxes and ``float32[N]`` scores."""
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    work = rgb
    if config.max_width is not None and w > config.max_width:
        new_h = max(1, round(h * config.max_width / w))
        work = cv2.resize(rgb, (config.max_width, new_h), interpolation=cv2.INTER_AREA)
    spaces, sims, ks = STRATEGIES[config.strategy]
    args = [(work, s, sims, ks, config.superpixel_scale, config.sigma) for s in spaces]
    if workers > 1 and len(spaces) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(spaces))) as pool:
            parts = list(pool.map(lambda a: _colour_space_boxes(*a), args))
    else:
        parts = [_colour_space_boxes(*a) for a in args]
    boxes, priority = _rank([b for part in parts for b in part], config.seed)

    wh, ww = work.shape[:2]
    whole = (boxes[:, 0] <= 0) & (boxes[:, 1] <= 0) & (boxes[:, 2] >= ww) & (boxes[:, 3] >= wh)
    far = np.array([ww, wh, ww, wh], np.float64)
    # map back; the far image border maps exactly onto the original's (no 639.9999 for 640)
    boxes = np.where(boxes >= far, np.array([w, h, w, h], np.float64), boxes * np.array([w, h, w, h]) / far)
    big = ((boxes[:, 2] - boxes[:, 0]) >= config.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= config.min_size)
    keep = big | whole
    return boxes[keep].astype(np.float32), (-priority[keep]).astype(np.float32)


def selective_search(image: np.ndarray, config: SelectiveSearchConfig = SelectiveSearchConfig(), *,
                     workers: int = 1) -> Proposals:
    """Selective search proposals of one image.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB (what :func:`backbone.images.read_image` returns); HxW grey
            and HxWx4 RGBA are accepted too.
        config: strategy, superpixel scale, resizing, minimum box size, seed.
        workers: threads for the colour spaces of this image (1 = sequential).

    Returns:
        :class:`Proposals` with boxes ``float32[N, 4]`` ``(x1, y1, x2, y2)`` in pixels of ``image`` (no +1),
        sorted by rank; ``scores`` = minus the ranking priority (higher first); ``sources`` all 0 ("ss").
    """
    boxes, scores = selective_search_arrays(image, config, workers=workers)
    return _to_proposals(boxes, scores)


def _to_proposals(boxes: np.ndarray, scores: np.ndarray) -> Proposals:
    return Proposals(torch.from_numpy(boxes), torch.from_numpy(scores),
                     torch.zeros(boxes.shape[0], dtype=torch.int64))


def _one(item: np.ndarray | str | os.PathLike, config: SelectiveSearchConfig) -> tuple[np.ndarray, np.ndarray]:
    image = item if isinstance(item, np.ndarray) else read_image(item)
    return selective_search_arrays(image, config)


def selective_search_many(images: Sequence[np.ndarray | str | os.PathLike],
                          config: SelectiveSearchConfig = SelectiveSearchConfig(), *,
                          workers: int = 1) -> list[Proposals]:
    """:func:`selective_search` over many images (arrays or image paths), ``workers`` processes in parallel.

    Returns one :class:`Proposals` per image, in input order. Paths are read with
    :func:`backbone.images.read_image` inside the workers (``InputError`` propagates).
    """
    if workers <= 1 or len(images) <= 1:
        return [_to_proposals(*_one(item, config)) for item in images]
    # "fork" starts workers in milliseconds and without re-importing torch ("spawn" takes seconds per worker).
    # The workers run no torch code, and must not call cv2.setNumThreads: after a fork from a parent whose
    # OpenCV thread pool is running, that call deadlocks.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=min(workers, len(images)),
                             mp_context=multiprocessing.get_context(method)) as pool:
        results = list(pool.map(_one, images, [config] * len(images)))
    return [_to_proposals(b, s) for b, s in results]
