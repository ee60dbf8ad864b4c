"""Selective search, step 2: features of the initial regions (Uijlings et al. 2013, section 3.2).

For a label image of R regions this computes, all at once with ``np.bincount`` (no per-region masks):

* size (pixels) and bounding box of each region;
* colour histograms: 25 bins per channel, concatenated and L1-normalised (sum 1 per region), so that the
  histogram intersection of two regions lies in [0, 1];
* texture histograms: Gaussian derivatives with sigma = 1 in 8 orientations, 10 bins each, per channel,
  concatenated and L1-normalised. Deviation, same information: the derivative along orientation
  ``theta + 180`` is minus the one along ``theta``, so we take the 4 axes 0, 45, 90, 135 degrees and bin the
  SIGNED response into 20 bins: the 10 negative bins are orientation ``theta + 180``, the 10 positive ones
  orientation ``theta``. The response range is the channel's largest absolute derivative in the image;
* the region adjacency graph, from comparing the label image with itself shifted by one pixel
  (4-connectivity).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

try:  # optional compiled kernels (see proposals.ss_segment); the numpy code below is the fallback
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is not installed
    numba = None
    HAVE_NUMBA = False

COLOUR_BINS = 25  # per channel, Uijlings et al. section 3.2
TEXTURE_ORIENTATIONS = 8  # Gaussian derivative directions
TEXTURE_BINS = 10  # per orientation and channel
TEXTURE_SIGMA = 1.0


@dataclass(frozen=True)
class RegionFeatures:
    """Features of R regions of one label image.

    Attributes:
        sizes: ``float64[R]`` pixel counts.
        boxes: ``float64[R, 4]`` ``(x1, y1, x2, y2)`` pixel bounds, no +1: a region covering columns
            3..7 has ``x1 = 3, x2 = 8``.
        colour: ``float32[R, 25 * C]`` L1-normalised colour histograms.
        texture: ``float32[R, 80 * C]`` L1-normalised texture histograms.
        pairs: ``int64[E, 2]`` adjacent region pairs, ``pairs[:, 0] < pairs[:, 1]``, each pair once.
    """

    sizes: np.ndarray
    boxes: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    pairs: np.ndarray


def colour_bins(image: np.ndarray) -> np.ndarray:
    """Colour-histogram bin of every pixel and channel.

    Args:
        image: ``uint8[H, W, C]`` in some colour space, channels 0..255.

    Returns:
        ``int32[H * W, C]``: bin ``c * 25 + value * 25 // 256`` for channel ``c``.
    """
    h, w, c = image.shape
    bins = (image.reshape(h * w, c).astype(np.int32) * COLOUR_BINS) >> 8
    return bins + np.arange(c, dtype=np.int32) * COLOUR_BINS


def texture_bins(image: np.ndarray) -> np.ndarray:
    """Texture-histogram bin of every pixel, channel and derivative axis (see module docstring).

    Args:
        image: ``uint8[H, W, C]`` in some colour space.

    Returns:
        ``int32[H * W, 4 * C]``: for channel ``c`` and axis ``a`` (0, 45, 90, 135 degrees) the bin
        ``(c * 4 + a) * 20 + b`` with ``b`` in 0..19 (0..9: negative response, 10..19: positive).
    """
    h, w, c = image.shape
    radius = int(np.ceil(3 * TEXTURE_SIGMA))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    gauss = np.exp(-x ** 2 / (2 * TEXTURE_SIGMA ** 2))
    gauss /= gauss.sum()
    dgauss = -x / TEXTURE_SIGMA ** 2 * gauss  # derivative of the Gaussian
    src = image.astype(np.float32)
    gx = cv2.sepFilter2D(src, cv2.CV_32F, dgauss, gauss, borderType=cv2.BORDER_REFLECT).reshape(h * w, c)
    gy = cv2.sepFilter2D(src, cv2.CV_32F, gauss, dgauss, borderType=cv2.BORDER_REFLECT).reshape(h * w, c)
    if HAVE_NUMBA:
        return _texture_bins_compiled(gx, gy)
    diag = np.float32(np.sqrt(0.5))
    axes = np.stack([gx, (gx + gy) * diag, gy, (gy - gx) * diag], axis=2)  # [HW, C, 4]
    scale = np.abs(axes).max(axis=(0, 2))  # per channel
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    half = TEXTURE_BINS  # bins per sign
    inv = (np.float32(1.0) / scale).astype(np.float32)
    b = np.floor((axes * inv[None, :, None] + np.float32(1.0)) * np.float32(half)).astype(np.int32)
    np.clip(b, 0, 2 * half - 1, out=b)
    offsets = (np.arange(c * 4, dtype=np.int32) * 2 * half).reshape(c, 4)
    return (b + offsets[None]).reshape(h * w, c * 4)


def adjacency(labels: np.ndarray) -> np.ndarray:
    """Pairs of 4-connected regions of a label image.

    Args:
        labels: ``int[H, W]`` labels 0..R-1.

    Returns:
        ``int64[E, 2]`` unique pairs with ``pairs[:, 0] < pairs[:, 1]``.
    """
    n = int(labels.max()) + 1 if labels.size else 0
    parts = []
    for p, q in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        diff = p != q
        if diff.any():
            a = p[diff].astype(np.int64)
            b = q[diff].astype(np.int64)
            parts.append(np.minimum(a, b) * n + np.maximum(a, b))
    if not parts:
        return np.zeros((0, 2), np.int64)
    codes = np.unique(np.concatenate(parts))
    return np.stack([codes // n, codes % n], axis=1)


def region_features(labels: np.ndarray, cbins: np.ndarray, tbins: np.ndarray) -> RegionFeatures:
    """Sizes, boxes, histograms and adjacency of the regions of ``labels``.

    Args:
        labels: ``int32[H, W]`` labels 0..R-1 without gaps.
        cbins: :func:`colour_bins` of the image, ``int32[H * W, C]``.
        tbins: :func:`texture_bins` of the image, ``int32[H * W, 4 * C]``.
    """
    h, w = labels.shape
    n = int(labels.max()) + 1
    ncol = int(cbins.shape[1]) * COLOUR_BINS
    ntex = int(tbins.shape[1]) * 2 * TEXTURE_BINS
    if HAVE_NUMBA:
        sizes, boxes, colour, texture = _region_stats(np.ascontiguousarray(labels, dtype=np.int32), cbins, tbins,
                                                      n, ncol, ntex)
        colour /= sizes[:, None].astype(np.float32) * cbins.shape[1]
        texture /= sizes[:, None].astype(np.float32) * tbins.shape[1]
        return RegionFeatures(sizes, boxes, colour, texture, adjacency(labels))
    flat = labels.ravel().astype(np.int64)
    sizes = np.bincount(flat, minlength=n).astype(np.float64)
    ys, xs = np.divmod(np.arange(h * w, dtype=np.int64), w)
    boxes = np.empty((n, 4), np.float64)
    order = np.argsort(flat, kind="stable")  # pixels grouped by region, for reduceat
    starts = np.concatenate([[0], np.cumsum(sizes[:-1]).astype(np.int64)])
    xs_o, ys_o = xs[order], ys[order]
    boxes[:, 0] = np.minimum.reduceat(xs_o, starts)
    boxes[:, 1] = np.minimum.reduceat(ys_o, starts)
    boxes[:, 2] = np.maximum.reduceat(xs_o, starts) + 1
    boxes[:, 3] = np.maximum.reduceat(ys_o, starts) + 1
    colour = _histograms(flat, cbins, n, ncol)
    texture = _histograms(flat, tbins, n, ntex)
    return RegionFeatures(sizes, boxes, colour, texture, adjacency(labels))


def _histograms(flat_labels: np.ndarray, bins: np.ndarray, n: int, nbins: int) -> np.ndarray:
    """``float32[n, nbins]`` L1-normalised histograms of per-pixel ``bins`` grouped by region."""
    codes = (flat_labels[:, None] * nbins + bins).ravel()
    hist = np.bincount(codes, minlength=n * nbins).reshape(n, nbins).astype(np.float32)
    hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1)
    return hist


if HAVE_NUMBA:
    @numba.njit(cache=True, nogil=True)
    def _texture_bins_compiled(gx, gy):  # pragma: no cover - compiled
        """Same result as the numpy code of :func:`texture_bins` from ``float32[HW, C]`` derivatives."""
        npix, c = gx.shape
        diag = np.float32(np.sqrt(0.5))
        scale = np.zeros(c, np.float32)
        for p in range(npix):
            for ch in range(c):
                x = gx[p, ch]
                y = gy[p, ch]
                m = max(abs(x), abs(y), abs((x + y) * diag), abs((y - x) * diag))
                if m > scale[ch]:
                    scale[ch] = m
        for ch in range(c):
            if scale[ch] <= 0:
                scale[ch] = 1.0
        half = TEXTURE_BINS
        out = np.empty((npix, 4 * c), np.int32)
        for p in range(npix):
            for ch in range(c):
                x = gx[p, ch]
                y = gy[p, ch]
                inv = np.float32(1.0) / scale[ch]
                for a in range(4):
                    if a == 0:
                        v = x
                    elif a == 1:
                        v = (x + y) * diag
                    elif a == 2:
                        v = y
                    else:
                        v = (y - x) * diag
                    b = int(np.floor((v * inv + np.float32(1.0)) * np.float32(half)))
                    b = min(max(b, 0), 2 * half - 1)
                    out[p, ch * 4 + a] = (ch * 4 + a) * 2 * half + b
        return out

    @numba.njit(cache=True, nogil=True)
    def _region_stats(labels, cbins, tbins, n, ncol, ntex):  # pragma: no cover - compiled
        """One pass over the pixels: sizes, boxes and (unnormalised) colour and texture counts."""
        h, w = labels.shape
        sizes = np.zeros(n, np.float64)
        boxes = np.empty((n, 4), np.float64)
        boxes[:, 0] = w
        boxes[:, 1] = h
        boxes[:, 2] = 0
        boxes[:, 3] = 0
        colour = np.zeros((n, ncol), np.float32)
        texture = np.zeros((n, ntex), np.float32)
        for y in range(h):
            for x in range(w):
                r = labels[y, x]
                p = y * w + x
                sizes[r] += 1
                boxes[r, 0] = min(boxes[r, 0], x)
                boxes[r, 1] = min(boxes[r, 1], y)
                boxes[r, 2] = max(boxes[r, 2], x + 1)
                boxes[r, 3] = max(boxes[r, 3], y + 1)
                for j in range(cbins.shape[1]):
                    colour[r, cbins[p, j]] += 1
                for j in range(tbins.shape[1]):
                    texture[r, tbins[p, j]] += 1
        return sizes, boxes, colour, texture
