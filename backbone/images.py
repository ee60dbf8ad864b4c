"""Reading images from disk into one form: ``np.ndarray[H, W, 3]``, ``uint8``, RGB.

Every package reads images through :func:`read_image`, so grayscale, RGBA, palette, 16-bit, CMYK and
EXIF-rotated files behave the same everywhere, and every failure is one :class:`InputError` line
naming the file. Decoding is OpenCV's (``IMREAD_COLOR`` applies the EXIF orientation and scales
16-bit samples to 8 bits); the pixel count is read from the header first with Pillow, so a huge
image is refused before it is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from backbone.errors import InputError

#: Largest image accepted by default: 100 megapixels (about 300 MB decoded). Larger files are refused
#: with a message; pass ``max_pixels`` (``--max-pixels`` on the command line) to allow them.
MAX_PIXELS = 100_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a clearer message


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, or None where Pillow cannot identify the format."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read ``path`` as an RGB image.

    Returns:
        ``np.ndarray[H, W, 3]`` of ``uint8`` in RGB order, EXIF orientation applied.

    Raises:
        InputError: missing, unreadable, empty, not an image, truncated, or above ``max_pixels``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder, expected an image file")
    try:
        data = p.read_bytes()
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except OSError as err:
        raise InputError(p, f"cannot read ({err.strerror or err})") from None
    if not data:
        raise InputError(p, "empty file")
    size = _header_size(p)
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        raise InputError(
            p, f"image is {w}x{h} ({w * h / 1e6:.0f} MP), above the {max_pixels / 1e6:.0f} MP limit; "
            "downscale it or raise --max-pixels")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = _quiet_imdecode(buf)
    if img is None:
        raise InputError(p, "not a readable image (corrupt, truncated or unsupported format)")
    if img.shape[0] * img.shape[1] > max_pixels:  # formats Pillow could not size
        raise InputError(p, f"image is {img.shape[1]}x{img.shape[0]}, above the {max_pixels / 1e6:.0f} MP limit")
    if size is not None and _is_truncated(p, data):
        raise InputError(p, "truncated image file")
    return np.ascontiguousarray(img[:, :, ::-1])


def _quiet_imdecode(buf: np.ndarray) -> np.ndarray | None:
    """``cv2.imdecode(buf, IMREAD_COLOR)`` without OpenCV's own stderr warnings (e.g. "PNG input buffer is
    incomplete"): they bypass logging and would add a second line to our one-line error."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _is_truncated(path: Path, data: bytes) -> bool:
    """OpenCV silently decodes a truncated JPEG (grey bottom rows) or PNG; check the file's structure.

    JPEG: the end-of-image marker must follow the last start-of-scan marker (an EXIF thumbnail has its
    own EOI earlier; bytes some cameras append after the EOI are allowed). PNG: the chunks, walked by
    their lengths, must reach ``IEND`` (bytes after it are allowed).
    """
    del path
    if data[:3] == b"\xff\xd8\xff":
        return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            length = int.from_bytes(data[pos: pos + 4], "big")
            if data[pos + 4: pos + 8] == b"IEND":
                return False
            pos += 12 + length  # length, type, data, CRC
        return True
    return False


# Input expansion (files, folders, globs, list files, URLs) lives in backbone.inputs; re-exported here
# for the callers that import it from this module.
from backbone.inputs import expand_inputs, list_images  # noqa: E402,F401
