"""Reading images from disk into one form: ``np.ndarray[H, W, 3]``, ``uint8``, RGB.

Every package reads images through :func:`read_image`, so grayscale, RGBA, palette, 16-bit, CMYK and
EXIF-rotated files behave the same everywhere, and every failure is one :class:`InputError` line
naming the file. Decoding is OpenCV's (``IMREAD_COLOR`` applies the EXIF orientation and scales
16-bit samples to 8 bits), from the file's bytes in memory (never through a temporary file).

Nothing is decoded before its size is known: the format is told from the file's first bytes and must be
one of :data:`FORMATS` (JPEG, PNG, BMP, WebP, TIFF, GIF, PBM/PGM/PPM); others that OpenCV would decode
(Radiance HDR, JPEG 2000, OpenEXR, PFM, Sun raster, AVIF, ...) are refused whatever their name, since some
of them have no size check and are decoded through a temporary file. The width and height are then read
from the header (Pillow, which parses headers without decoding) and an image above ``max_pixels`` is
refused. The file itself is read with a byte limit (:func:`max_file_bytes`); a pipe or device
(``/dev/stdin``, a FIFO) is read the same way, giving up after :data:`PIPE_TIMEOUT_S` without data.
"""

from __future__ import annotations

import io
import os
import select
import stat
import time
import warnings
from pathlib import Path
from struct import error as struct_error
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from backbone.config import IMAGE_SUFFIXES, MAX_PIXELS  # noqa: F401  (re-exported; defined torch- and cv2-free)
from backbone.errors import InputError
from backbone.safeio import read_checked, stat_path

if TYPE_CHECKING:
    from torch import Tensor

#: Formats decoded (name -> the Pillow format names that agree with it). The format is told from the
#: file's first bytes (:func:`sniff_format`), as OpenCV tells it, not from its suffix.
FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": ("JPEG", "MPO"), "PNG": ("PNG",), "BMP": ("BMP", "DIB"), "WebP": ("WEBP",), "TIFF": ("TIFF",),
    "GIF": ("GIF",), "PNM": ("PPM",),
}
#: Formats recognised only to name them when refusing (first bytes -> name).
_REFUSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"), (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"PF\n", "PFM"),
    (b"Pf\n", "PFM"), (b"\x59\xa6\x6a\x95", "Sun raster"), (b"P7", "PAM"),
)
#: Seconds a pipe or device may stay silent before reading it is given up.
PIPE_TIMEOUT_S = 10.0

Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a clearer message


def max_file_bytes(max_pixels: int = MAX_PIXELS) -> int:
    """Largest image file read for a pixel limit: 4 bytes per pixel (an uncompressed 8-bit RGBA file at
    the limit) + 1 MiB of headers; 401 MB at the default limit."""
    return 4 * max_pixels + (1 << 20)


def sniff_format(head: bytes) -> str | None:
    """The :data:`FORMATS` key of a file starting with ``head`` (its first 16 bytes suffice), or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "PNM"
    return None


def _refused_name(head: bytes) -> str | None:
    for magic, name in _REFUSED_MAGIC:
        if head.startswith(magic):
            return name
    if head[4:12] in (b"ftypavif", b"ftypavis", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "AVIF/HEIF"
    return None


def _header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header of ``data`` (format ``fmt``), or None where Pillow cannot parse it or
    reads it as another format than the first bytes say (OpenCV would then decode something else)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. TIFF's "Corrupt EXIF data": not a line for the user
            with Image.open(io.BytesIO(data)) as im:
                return im.size if im.format in FORMATS[fmt] else None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct_error, EOFError,
            IndexError, KeyError, TypeError, MemoryError, OverflowError, ZeroDivisionError):
        return None


def _read_stream(p: Path, limit: int) -> bytes:
    """Read a pipe or character device: never more than ``limit`` bytes, never waiting more than
    :data:`PIPE_TIMEOUT_S` for data, and stopping after the first bytes when they are no image format."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except OSError as err:
        raise InputError(p, f"cannot read ({err.strerror or err})") from None
    chunks, size, checked = [], 0, False
    deadline = time.monotonic() + PIPE_TIMEOUT_S
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:  # a writer is there, no data yet
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise InputError(p, f"no data from this pipe or device within {PIPE_TIMEOUT_S:g} s") from None
                continue
            except OSError as err:
                raise InputError(p, f"cannot read ({err.strerror or err})") from None
            if not chunk:
                if chunks or not stat.S_ISFIFO(os.fstat(fd).st_mode):
                    break
                if time.monotonic() > deadline:  # a FIFO nobody opened for writing (or closed empty)
                    raise InputError(p, f"empty: no data from this pipe within {PIPE_TIMEOUT_S:g} s")
                time.sleep(0.05)  # no writer yet: a FIFO reads as end-of-file until one opens it
                continue
            deadline = time.monotonic() + PIPE_TIMEOUT_S
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise InputError(p, f"more than {limit / 1e6:.0f} MB from this pipe or device, above the limit "
                                    "for one image")
            if not checked and size >= 16:
                checked = True
                head = b"".join(chunks)[:16]
                if sniff_format(head) is None:
                    raise InputError(p, _format_problem(head))
    finally:
        os.close(fd)
    if not chunks:
        raise InputError(p, "empty: no data from this pipe or device")
    return b"".join(chunks)


def _format_problem(head: bytes) -> str:
    accepted = ", ".join(FORMATS)
    name = _refused_name(head)
    if name is not None:
        return f"{name} images are not accepted (accepted formats: {accepted})"
    return f"not a readable image (unknown or unsupported format; accepted: {accepted})"


def _read_file(p: Path, max_pixels: int) -> bytes:
    """The bytes of the image file ``p``, read within :func:`max_file_bytes`; one InputError otherwise.

    Unlike :func:`backbone.safeio.regular_file`, a pipe or character device is read (through
    :func:`_read_stream`), not refused: ``/dev/stdin`` is a valid image source."""
    limit = max_file_bytes(max_pixels)
    st = stat_path(p, expected="an image file")
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return _read_stream(p, limit)
    if not stat.S_ISREG(st.st_mode):
        raise InputError(p, "not a regular file, expected an image file")
    if st.st_size > limit:
        raise InputError(p, f"file is {st.st_size / 1e6:.0f} MB, above the {limit / 1e6:.0f} MB limit for an "
                            f"image of at most {max_pixels / 1e6:.0f} MP; raise --max-pixels")
    return read_checked(p, max_bytes=limit, what="file")


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read ``path`` as an RGB image.

    Returns:
        ``np.ndarray[H, W, 3]`` of ``uint8`` in RGB order, EXIF orientation applied.

    Raises:
        InputError: missing, unreadable, empty, not an image, a format outside :data:`FORMATS`, truncated,
            above ``max_pixels`` (told from the header, before decoding), a file above
            :func:`max_file_bytes`, or a pipe that gives no data.
    """
    p = Path(path)
    data = _read_file(p, max_pixels)
    if not data:
        raise InputError(p, "empty file")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise InputError(p, _format_problem(data[:16]))
    size = _header_size(data, fmt)
    if size is None:
        raise InputError(p, f"not a readable image (corrupt or truncated {fmt} header)")
    w, h = size
    if w * h > max_pixels:
        raise InputError(
            p, f"image is {w}x{h} ({w * h / 1e6:.0f} MP), above the {max_pixels / 1e6:.0f} MP limit; "
            "downscale it or raise --max-pixels")
    if w < 1 or h < 1:
        raise InputError(p, f"image is {w}x{h}, expected at least 1x1")
    img = _quiet_imdecode(np.frombuffer(data, dtype=np.uint8))
    if img is None:
        raise InputError(p, "not a readable image (corrupt, truncated or unsupported format)")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] * img.shape[1] > max_pixels:
        raise InputError(p, f"decoded to {img.shape}, not the {w}x{h} colour image its header announces")
    if _is_truncated(p, data):
        raise InputError(p, "truncated image file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second copy of a large image


def image_to_tensor(image: np.ndarray) -> Tensor:
    """``np.ndarray[H, W, 3]`` uint8 RGB (as :func:`read_image` returns) -> ``Tensor[3, H, W]`` uint8.

    The tensor shares the array's memory when it is C-contiguous (what :func:`read_image` returns); a view
    with other strides (a crop, a mirror ``[:, ::-1]``) is copied once to be contiguous first. The one
    HWC -> CHW conversion of the project; torch is imported here, on first use, so reading images stays
    torch-free.
    """
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _quiet_imdecode(buf: np.ndarray) -> np.ndarray | None:
    """``cv2.imdecode(buf, IMREAD_COLOR)`` without OpenCV's own stderr warnings (e.g. "PNG input buffer is
    incomplete"): they bypass logging and would add a second line to our one-line error."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:
        return None
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

