"""Selective search, step 3: hierarchical grouping (Uijlings et al. 2013, section 3.1, Algorithm 1).

Starting from the initial regions, repeatedly merge the two most similar ADJACENT regions until one region
(the whole image) is left; every region ever formed is a proposal. The similarity is a sum of the selected
terms of section 3.2, each in [0, 1]:

* colour ``sum_k min(c_i^k, c_j^k)`` (histogram intersection of L1-normalised colour histograms),
* texture: the same for the texture histograms,
* size ``1 - (size_i + size_j) / size(image)`` (merge small regions first),
* fill ``1 - (size(BB_ij) - size_i - size_j) / size(image)`` (merge regions that fill each other's gaps).

Features of a merged region are the size-weighted averages of its parts' histograms, its size the sum and its
box the union, as in the paper: nothing is recomputed from pixels.

Implementation: a binary heap of candidate pairs with lazy invalidation (a pair is dropped when it is
popped and one of its regions has already been merged), and neighbour lists resolved through a
union-find forest of merges, so a merge costs O(degree * histogram length + degree * log E) and nothing
is ever re-sorted. The loop is compiled with numba when it is installed; without numba the same code runs
as plain Python (correct, about 100x slower).
"""

from __future__ import annotations

import heapq
import logging

import numpy as np

from proposals.ss_features import RegionFeatures

log = logging.getLogger(__name__)

try:
    import numba

    _jit = numba.njit(cache=True, nogil=True)
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is not installed
    def _jit(fn):
        return fn

    HAVE_NUMBA = False

#: The similarity terms and their letters (Uijlings et al. name the combinations C+T+S+F etc.).
SIMILARITY_TERMS = "CTSF"


def hierarchical_grouping(features: RegionFeatures, similarity: str, image_area: float) -> np.ndarray:
    """Run Algorithm 1 of Uijlings et al. on one segmentation.

    Args:
        features: the initial regions (:func:`proposals.ss_features.region_features`).
        similarity: which terms to add, a subset of ``"CTSF"`` (colour, texture, size, fill), e.g.
            ``"CTSF"`` or ``"TSF"``.
        image_area: pixels in the image, the normaliser of the size and fill terms.

    Returns:
        ``float64[2R - 1, 4]`` boxes ``(x1, y1, x2, y2)`` (pixel bounds, no +1) of every region in the order
        they were formed: the R initial regions, then one per merge; the last one is the whole image
        (when the regions are connected, as those of a label image are). Fewer rows if the adjacency
        graph is not connected.
    """
    bad = set(similarity) - set(SIMILARITY_TERMS)
    if bad or not similarity:
        raise ValueError(f"similarity must be a non-empty subset of {SIMILARITY_TERMS!r}, got {similarity!r}")
    if features.sizes.shape[0] == 1:
        return features.boxes.copy()
    if not HAVE_NUMBA:
        log.warning("numba is not installed: selective search grouping runs as plain Python (slow)")
    return _group(features.sizes, features.boxes, features.colour, features.texture,
                  np.ascontiguousarray(features.pairs), float(image_area),
                  "C" in similarity, "T" in similarity, "S" in similarity, "F" in similarity)


@_jit
def _similarity(a, b, size, box, col, tex, area, use_c, use_t, use_s, use_f):  # pragma: no cover - compiled
    s = 0.0
    if use_c:
        acc = 0.0
        for d in range(col.shape[1]):
            acc += min(col[a, d], col[b, d])
        s += acc
    if use_t:
        acc = 0.0
        for d in range(tex.shape[1]):
            acc += min(tex[a, d], tex[b, d])
        s += acc
    if use_s:
        s += 1.0 - (size[a] + size[b]) / area
    if use_f:
        bw = max(box[a, 2], box[b, 2]) - min(box[a, 0], box[b, 0])
        bh = max(box[a, 3], box[b, 3]) - min(box[a, 1], box[b, 1])
        s += 1.0 - (bw * bh - size[a] - size[b]) / area
    return s


@_jit
def _find(parent, x):  # pragma: no cover - compiled
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@_jit
def _group(sizes, boxes, colour, texture, pairs, area, use_c, use_t, use_s, use_f):  # pragma: no cover
    n = sizes.shape[0]
    m = 2 * n - 1
    size = np.empty(m, np.float64)
    size[:n] = sizes
    box = np.empty((m, 4), np.float64)
    box[:n] = boxes
    # histograms are only stored (and merged) for the terms in use
    col = np.empty((m if use_c else 1, colour.shape[1]), np.float32)
    if use_c:
        col[:n] = colour
    tex = np.empty((m if use_t else 1, texture.shape[1]), np.float32)
    if use_t:
        tex[:n] = texture

    # neighbour lists in one pool: initial lists in CSR order, then one list per merged region
    e = pairs.shape[0]
    degree = np.zeros(n, np.int64)
    for k in range(e):
        degree[pairs[k, 0]] += 1
        degree[pairs[k, 1]] += 1
    start = np.zeros(m, np.int64)
    length = np.zeros(m, np.int64)
    for r in range(1, n):
        start[r] = start[r - 1] + degree[r - 1]
    cap = max(4 * e, 16)
    pool = np.empty(cap, np.int64)
    for k in range(e):
        a, b = pairs[k, 0], pairs[k, 1]
        pool[start[a] + length[a]] = b
        length[a] += 1
        pool[start[b] + length[b]] = a
        length[b] += 1
    used = 2 * e

    heap = [(0.0, 0, 0)]
    heap.pop()
    for k in range(e):
        a, b = pairs[k, 0], pairs[k, 1]
        heap.append((-_similarity(a, b, size, box, col, tex, area, use_c, use_t, use_s, use_f), a, b))
    heapq.heapify(heap)

    parent = np.arange(m)
    alive = np.zeros(m, np.bool_)
    alive[:n] = True
    stamp = np.full(m, -1, np.int64)
    t = n
    while len(heap) > 0:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue  # stale pair: one side was merged already
        si, sj = size[i], size[j]
        size[t] = si + sj
        box[t, 0] = min(box[i, 0], box[j, 0])
        box[t, 1] = min(box[i, 1], box[j, 1])
        box[t, 2] = max(box[i, 2], box[j, 2])
        box[t, 3] = max(box[i, 3], box[j, 3])
        wi, wj = si / (si + sj), sj / (si + sj)
        if use_c:
            for d in range(col.shape[1]):
                col[t, d] = wi * col[i, d] + wj * col[j, d]
        if use_t:
            for d in range(tex.shape[1]):
                tex[t, d] = wi * tex[i, d] + wj * tex[j, d]
        alive[i] = False
        alive[j] = False
        alive[t] = True
        parent[i] = t
        parent[j] = t
        need = used + length[i] + length[j]
        if need > cap:
            cap = max(2 * cap, need)
            grown = np.empty(cap, np.int64)
            grown[:used] = pool[:used]
            pool = grown
        start[t] = used
        for src in (i, j):
            for k in range(start[src], start[src] + length[src]):
                x = _find(parent, pool[k])
                if x != t and stamp[x] != t:
                    stamp[x] = t
                    pool[used] = x
                    used += 1
                    s = _similarity(t, x, size, box, col, tex, area, use_c, use_t, use_s, use_f)
                    heapq.heappush(heap, (-s, t, x))
        length[t] = used - start[t]
        t += 1
    return box[:t].copy()
