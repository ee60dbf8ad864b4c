"""Selective search region proposals (Uijlings et al. 2013, "Selective Search for Object Recognition").

The GoogLeNet detector (Szegedy et al. 2014, section 8) takes R-CNN's selective search in "fast" mode with
the superpixel size doubled (``superpixel_scale=2``: Felzenszwalb k and min size x2, about half the
proposals). The steps follow R-CNN's ``selective_search_boxes.m`` and Uijlings et al.'s code:

1. resize the image to width ``width`` (R-CNN: 500), UP or down (a 375-px wide portrait photo is enlarged);
   boxes are mapped back to the original pixels at the end;
2. per colour space, Felzenszwalb–Huttenlocher initial regions for each ``k`` (:mod:`proposals.ss_segment`);
3. per segmentation, region features (:mod:`proposals.ss_features`) and, per similarity set, hierarchical
   grouping (:mod:`proposals.ss_grouping`): every region formed is a box;
4. ranking (Uijlings et al. section 4.1, ``Image2HierarchicalGrouping.m``): in each hierarchy the region
   formed by the last merge (the whole image) has level 1, the one before it 2, ...; the initial regions
   enter once per segmentation, all at one level (one above the highest merge); priority = level x uniform
   random in [0, 1) (seeded); everything is pooled and sorted by priority (lowest first);
5. boxes narrower or lower than ``min_size`` pixels OF THE RESIZED IMAGE are dropped (R-CNN: 20 at width
   500), then duplicates, keeping the best-ranked copy; the whole-image box is always kept, so every image,
   even a 1x1 or a uniform one, yields at least one proposal. Optional, not R-CNN: near-duplicate removal
   (``nms_iou``) and a cut to ``max_boxes``.

Strategies (``SelectiveSearchConfig.strategy``), Uijlings et al. section 5.2 / R-CNN / OpenCV contrib:

* ``"fast"``: colour spaces {HSV, Lab} x similarities {C+T+S+F, T+S+F} x k in {50, 100} (8 hierarchies);
* ``"quality"``: {HSV, Lab, rgI, H, I} x {C+T+S+F, T+S+F, F, S} x k in {50, 100, 150, 300} (80);
* ``"single"``: HSV, C+T+S+F, k = 100.

Deviations: texture histograms bin signed derivatives along 4 axes (same content as 8 orientations, see
:mod:`proposals.ss_features`); Felzenszwalb edge weights are quantised to 1/16 grey level (compiled path);
images more elongated than 1:4 are resized so that their longer side is at most 4 x ``width``; whatever the
config, the working image has at most 2000 px on its longer side and 1 MP (``MAX_WORK_SIDE``,
``MAX_WORK_PIXELS``: R-CNN's most elongated case), so ``width=None`` does not mean "any size".
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from backbone.images import read_image
from proposals.ss_features import colour_bins, region_features, texture_bins
from proposals.ss_grouping import hierarchical_grouping
from proposals.ss_segment import felzenszwalb_multi, convert_colour
from proposals.structures import Proposals

log = logging.getLogger(__name__)

try:  # compiled near-duplicate removal; the same code runs as plain Python without numba
    import numba

    _jit = numba.njit(cache=True, nogil=True)
except ImportError:  # pragma: no cover - exercised only where numba is not installed
    def _jit(fn):
        return fn

#: strategy name -> (colour spaces, similarity sets, Felzenszwalb k values); Uijlings et al. section 5.2.
STRATEGIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = {
    "fast": (("hsv", "lab"), ("CTSF", "TSF"), (50, 100)),
    "quality": (("hsv", "lab", "rgi", "h", "i"), ("CTSF", "TSF", "F", "S"), (50, 100, 150, 300)),
    "single": (("hsv",), ("CTSF",), (100,)),
    # ours (issue 11): R-CNN's fast mode with four k instead of two, ranked and cut below (DIVERSE_LIST)
    "diverse": (("hsv", "lab"), ("CTSF", "TSF"), (50, 100, 200, 400)),
}
#: Bumped whenever the same config gives other boxes (proposal caches are named by it): 2 = Felzenszwalb edge
#: weights in 1/4096 instead of 1/16 grey level (issue 11)
ALGORITHM_VERSION = 2
#: R-CNN's strategies keep every box of 20 px and more at width 500 (``selective_search_boxes.m``)
RCNN_STRATEGIES = ("fast", "quality", "single")
#: how "diverse" cuts its pool (min_size, nms_iou, max_boxes): measured on coco128 against OpenCV's fast mode,
#: bench/README-proposals.md -- no size filter, near-duplicates above IoU 0.8 dropped, the best 1,700 kept
DIVERSE_LIST = (0, 0.8, 1700)


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Settings of :func:`selective_search`. The defaults are our "diverse" strategy, which finds more objects
    per box than OpenCV's fast mode (BENCHMARKS.md); ``SelectiveSearchConfig.rcnn("fast")`` is R-CNN's fast
    mode exactly (Girshick et al. 2014), which the detector uses (the GoogLeNet paper's proposals)."""

    strategy: str = "diverse"  # see STRATEGIES (Uijlings et al. section 5.2, R-CNN; "diverse" is ours)
    superpixel_scale: float = 1.0  # multiplies Felzenszwalb k and min size; GoogLeNet paper section 8 uses 2
    # R-CNN resizes every image to width 500, up or down, before selective search; None = never.
    # Elongated images are capped at MAX_SIDE_FACTOR x width on their longer side
    width: int | None = 500
    upscale: bool = True  # False: only shrink images wider than ``width`` (ours before issue 11)
    # drop boxes narrower or lower than this, in pixels of the resized image (R-CNN: 20 at width 500), before
    # mapping back; the whole-image box is always kept. 0 keeps everything (as OpenCV does)
    min_size: int = DIVERSE_LIST[0]
    seed: int = 0  # seeds the random part of the ranking (Uijlings et al. section 4.1)
    sigma: float = 0.8  # Felzenszwalb pre-smoothing (Uijlings et al. / R-CNN)
    max_boxes: int | None = DIVERSE_LIST[2]  # keep only the best-ranked boxes; None = all (R-CNN)
    # near-duplicate removal after ranking: drop a box whose IoU with a better-ranked kept box exceeds this
    # (greedy NMS in rank order); None = exact duplicates only (R-CNN). Measured on coco128 with the list
    # cut to 1,600 boxes: 0.9 gains recall@0.5 +0.027 and recall@0.7 +0.010 (bench/README-proposals.md)
    nms_iou: float | None = DIVERSE_LIST[1]

    @classmethod
    def rcnn(cls, strategy: str = "fast", **overrides: Any) -> SelectiveSearchConfig:
        """R-CNN's settings for one of its strategies (:data:`RCNN_STRATEGIES`): 20 px size filter at width 500,
        every box kept, exact duplicates only; ``overrides`` set other fields (``superpixel_scale``, ``seed``)."""
        if strategy not in RCNN_STRATEGIES:
            raise ValueError(f"{strategy!r} is not one of R-CNN's strategies {RCNN_STRATEGIES}")
        return cls(**{"strategy": strategy, "min_size": 20, "nms_iou": None, "max_boxes": None, **overrides})

    @classmethod
    def for_strategy(cls, strategy: str, **overrides: Any) -> SelectiveSearchConfig:
        """A strategy with its own list settings: R-CNN's for its strategies, the defaults for "diverse"."""
        if strategy in RCNN_STRATEGIES:
            return cls.rcnn(strategy, **overrides)
        return cls(strategy=strategy, **overrides)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")
        if not self.superpixel_scale > 0:
            raise ValueError(f"superpixel_scale must be > 0, got {self.superpixel_scale}")
        if self.width is not None and self.width < 1:
            raise ValueError(f"width must be >= 1 or None, got {self.width}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")
        if self.max_boxes is not None and self.max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1 or None, got {self.max_boxes}")
        if self.nms_iou is not None and not 0 < self.nms_iou <= 1:
            raise ValueError(f"nms_iou must be in (0, 1] or None, got {self.nms_iou}")


#: An elongated image resized to ``width`` keeps its longer side at most this many times ``width``
#: (a 5000x1 strip would otherwise become 500 x 2,500,000 pixels).
MAX_SIDE_FACTOR = 4
#: Hard bounds on the working image whatever the config (``width=None`` and ``upscale=False`` included):
#: the longer side and the pixel count of R-CNN's most elongated case at width 500 (500 x 2000), so that
#: a long thin image (500 x 200,000) costs no more than that: ~0.1 GB and a few seconds.
MAX_WORK_SIDE = MAX_SIDE_FACTOR * 500
MAX_WORK_PIXELS = 500 * MAX_WORK_SIDE


def working_size(height: int, width: int, config: SelectiveSearchConfig) -> tuple[int, int]:
    """``(height, width)`` of the image selective search works on (see :class:`SelectiveSearchConfig`);
    never more than :data:`MAX_WORK_SIDE` on the longer side or :data:`MAX_WORK_PIXELS` in all."""
    scale = 1.0
    if config.width is not None and (config.upscale or width > config.width):
        scale = config.width / width
        scale = min(scale, MAX_SIDE_FACTOR * config.width / max(height, width))
    scale = min(scale, MAX_WORK_SIDE / max(height, width), (MAX_WORK_PIXELS / (height * width)) ** 0.5)
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


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
                        scale: float, sigma: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes of every strategy that uses colour space ``space`` with their hierarchy levels (:func:`_levels`):
    per k, one ``(float64[M, 4], float64[M])`` pair per similarity set and one for the initial regions."""
    converted = convert_colour(image, space)
    ks_scaled = tuple(k * scale for k in ks)
    labels = felzenszwalb_multi(converted, ks_scaled, sigma=sigma,
                                min_sizes=tuple(max(1, round(k)) for k in ks_scaled))
    cbins, tbins = colour_bins(converted), texture_bins(converted)
    area = float(image.shape[0] * image.shape[1])
    out = []
    for lab in labels:
        feats = region_features(lab, cbins, tbins)
        r = feats.sizes.shape[0]
        merged = [hierarchical_grouping(feats, sim, area)[r:] for sim in similarities]
        out += _levels(feats.boxes, merged)
    return out


def _levels(initial: np.ndarray, merged: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hierarchy levels of one segmentation's boxes, as in Uijlings et al.'s ``Image2HierarchicalGrouping``.

    Args:
        initial: ``float64[R, 4]`` boxes of the initial regions.
        merged: per similarity set, ``float64[M, 4]`` boxes of the regions formed by merging, in merge order.

    Returns:
        ``(boxes, levels)`` pairs: one per similarity set (the last merge, the whole image, has level 1, the
        one before it 2, ...), then the initial regions ONCE for the segmentation, all at one level: one more
        than the first similarity set's number of merges (Uijlings et al. give every initial region the
        same priority; ranking them by raster position would favour the top-left ones where a list is cut).
    """
    out = [(b, np.arange(b.shape[0], 0, -1, dtype=np.float64)) for b in merged]
    top = float(merged[0].shape[0] + 1) if merged else 1.0
    out.append((initial, np.full(initial.shape[0], top)))
    return out


def _rank(parts: list[tuple[np.ndarray, np.ndarray]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool ``(boxes, levels)`` parts; priority = level x uniform random in [0, 1) (Uijlings et al. section
    4.1, R-CNN), lowest first; returns unique boxes ``float64[N, 4]`` sorted by priority and the priorities."""
    boxes, priority = [], []
    for index, (b, level) in enumerate(parts):
        rng = np.random.default_rng([seed, index])  # one stream per part: parallel runs stay deterministic
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
    wh, ww = working_size(h, w, config)
    work = rgb
    if (wh, ww) != (h, w):
        shrink = ww * wh < w * h
        work = cv2.resize(rgb, (ww, wh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    spaces, sims, ks = STRATEGIES[config.strategy]
    args = [(work, s, sims, ks, config.superpixel_scale, config.sigma) for s in spaces]
    if workers > 1 and len(spaces) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(spaces))) as pool:
            parts = list(pool.map(lambda a: _colour_space_boxes(*a), args))
    else:
        parts = [_colour_space_boxes(*a) for a in args]
    boxes, priority = _rank([b for part in parts for b in part], config.seed)

    # R-CNN's size filter, in pixels of the resized image (FilterBoxesWidth before the mapping back)
    whole = (boxes[:, 0] <= 0) & (boxes[:, 1] <= 0) & (boxes[:, 2] >= ww) & (boxes[:, 3] >= wh)
    big = ((boxes[:, 2] - boxes[:, 0]) >= config.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= config.min_size)
    keep = big | whole
    boxes, priority = boxes[keep], priority[keep]
    if config.nms_iou is not None:
        keep = _greedy_nms(boxes, config.nms_iou, config.max_boxes or boxes.shape[0])
        boxes, priority = boxes[keep], priority[keep]
    if config.max_boxes is not None:
        boxes, priority = boxes[: config.max_boxes], priority[: config.max_boxes]
    far = np.array([ww, wh, ww, wh], np.float64)
    # map back; the far image border maps exactly onto the original's (no 639.9999 for 640)
    boxes = np.where(boxes >= far, np.array([w, h, w, h], np.float64), boxes * np.array([w, h, w, h]) / far)
    return boxes.astype(np.float32), (-priority).astype(np.float32)


@_jit
def _greedy_nms(boxes, iou, limit):  # pragma: no cover - compiled
    """Indices of ``float64[N, 4]`` xyxy boxes (sorted best first) kept by greedy NMS: a box is dropped when
    its IoU with a kept one exceeds ``iou``; stops once ``limit`` boxes are kept."""
    n = boxes.shape[0]
    keep = np.empty(min(n, limit), np.int64)
    nk = 0
    for i in range(n):
        if nk >= limit:
            break
        x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        area = (x2 - x1) * (y2 - y1)
        ok = True
        for j in range(nk):
            k = keep[j]
            iw = min(x2, boxes[k, 2]) - max(x1, boxes[k, 0])
            if iw <= 0:
                continue
            ih = min(y2, boxes[k, 3]) - max(y1, boxes[k, 1])
            if ih <= 0:
                continue
            inter = iw * ih
            other = (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])
            if inter > iou * (area + other - inter):
                ok = False
                break
        if ok:
            keep[nk] = i
            nk += 1
    return keep[:nk]


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
