"""What users pass as images on the command line, turned into a list of inputs, and reading one of them.

An input argument may be:

* an image file, or a folder (every image under it, recursively, sorted);
* a glob pattern, quoted so the shell leaves it alone: ``'val/*.jpg'``, ``'photos/**/*.png'`` (``**``
  crosses folders); files that are not images by suffix are left out;
* ``@list.txt`` (or ``--source list.txt`` where a command has it): a text file with one path, folder, glob
  or URL per line; blank lines and lines starting with ``#`` are skipped; relative paths are taken from
  the list file's folder;
* an ``http://`` or ``https://`` URL: downloaded when its turn comes, to a temporary file that is removed
  afterwards, with a timeout (:data:`URL_TIMEOUT_S`) and a size limit (:data:`MAX_DOWNLOAD_BYTES`).

Inputs are kept as :class:`pathlib.Path` for files and as ``str`` for URLs (``Path`` would fold
``https://`` into ``https:/``). Every problem is one :class:`InputError` line naming the input.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Union

from backbone.errors import InputError

if TYPE_CHECKING:
    import numpy as np

#: Seconds to wait for a URL to connect and for each read.
URL_TIMEOUT_S = 30.0
#: Largest download accepted (bytes): far above any photo, far below a memory problem.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

#: One input: a file path, or a URL kept as text.
Input = Union[Path, str]

_GLOB_CHARS = set("*?[")


def is_url(item: str | os.PathLike) -> bool:
    return isinstance(item, str) and item.lower().startswith(("http://", "https://"))


def input_name(item: Input) -> str:
    """The file name of an input (a URL's last path component, query left out)."""
    if is_url(item):
        from urllib.parse import unquote, urlsplit

        name = Path(unquote(urlsplit(str(item)).path)).name
        return name or "download"
    return Path(item).name


def input_stem(item: Input) -> str:
    return Path(input_name(item)).stem


def expand_inputs(inputs: Iterable[str | os.PathLike], *, source: str | os.PathLike | None = None) -> list[Input]:
    """Command-line inputs (and the list file ``source``) -> the inputs to process, in order.

    Files are kept as given, folders expanded by :func:`list_images`, globs by :func:`glob.glob` (sorted,
    images only), ``@FILE`` and ``source`` read as list files, URLs kept as text.

    Raises InputError for a path that does not exist, a folder without images, a glob matching no image,
    a list file that cannot be read or lists nothing, and when nothing at all is given.
    """
    items: list[Input] = []
    if source is not None:
        items.extend(_read_list(Path(source)))
    for item in inputs:
        try:
            items.extend(_expand_one(item, base=None))
        except OSError as err:  # a name the file system refuses (ENAMETOOLONG, ELOOP ...): one line, no traceback
            raise InputError(os.fspath(item), err.strerror or str(err)) from None
    if not items:
        raise InputError(None, "no input images given")
    return items


def _expand_one(item: str | os.PathLike, base: Path | None, depth: int = 0) -> list[Input]:
    text = os.fspath(item)
    if is_url(text):
        return [text]
    if text.startswith("@") and not Path(text).exists():
        if depth > 0:
            raise InputError(text, "a list file may not name another list file")
        return _read_list(Path(_rebase(text[1:], base)))
    text = _rebase(text, base)
    p = Path(text)
    if p.is_dir():
        return list(list_images(p))
    if p.exists():
        return [p]
    if _GLOB_CHARS & set(text):
        from backbone.images import IMAGE_SUFFIXES

        matches = sorted(glob.glob(text, recursive=True))
        files = [Path(m) for m in matches if Path(m).suffix.lower() in IMAGE_SUFFIXES and Path(m).is_file()]
        if not files:
            raise InputError(text, "no image file matches this pattern")
        return files
    raise InputError(p, "no such file or folder")


def _rebase(text: str, base: Path | None) -> str:
    if base is None or os.path.isabs(text):
        return text
    return os.path.join(base, text)


def _read_list(path: Path) -> list[Input]:
    """The inputs listed in the text file ``path`` (see the module docstring)."""
    if not path.is_file():
        raise InputError(path, "no such list file" if not path.exists() else "list file is not a regular file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_DOWNLOAD_BYTES + 1)
    except UnicodeDecodeError:
        raise InputError(path, "list file is not UTF-8 text (one image path per line)") from None
    except OSError as err:
        raise InputError(path, f"cannot read list file ({err.strerror or err})") from None
    if len(text) > MAX_DOWNLOAD_BYTES:
        raise InputError(path, f"list file is larger than {MAX_DOWNLOAD_BYTES // 2**20} MB")
    items: list[Input] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            items.extend(_expand_one(line, base=path.parent, depth=1))
    if not items:
        raise InputError(path, "list file names no images")
    return items


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under ``folder`` (recursively), sorted. Raises InputError if there are none."""
    from backbone.images import IMAGE_SUFFIXES

    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise InputError(root, f"no image files ({', '.join(IMAGE_SUFFIXES[:3])} ...) in folder")
    return files


@contextlib.contextmanager
def local_file(item: Input, *, timeout: float = URL_TIMEOUT_S,
               max_bytes: int = MAX_DOWNLOAD_BYTES) -> Iterator[Path]:
    """A local path holding ``item``: the path itself, or a URL downloaded to a temporary file that is
    removed on exit. Raises InputError (one line) when the download fails, times out or is too large."""
    if not is_url(item):
        yield Path(item)
        return
    url = str(item)
    suffix = Path(input_name(url)).suffix[:16]
    fd, tmp = tempfile.mkstemp(prefix="detect-url-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            _download(url, out, timeout=timeout, max_bytes=max_bytes)
        yield Path(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _download(url: str, out, *, timeout: float, max_bytes: int) -> None:
    import urllib.error  # here, not at the top: http/email modules cost every command's start-up
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "goingdeeper-det"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise InputError(url, f"download is {int(length) / 2**20:.0f} MB, above the "
                                      f"{max_bytes / 2**20:.0f} MB limit")
            total = 0
            while chunk := response.read(1 << 16):
                total += len(chunk)
                if total > max_bytes:
                    raise InputError(url, f"download is larger than the {max_bytes / 2**20:.0f} MB limit")
                out.write(chunk)
    except urllib.error.HTTPError as err:
        raise InputError(url, f"download failed (HTTP {err.code} {err.reason})") from None
    except urllib.error.URLError as err:
        reason = err.reason
        raise InputError(url, f"cannot download ({getattr(reason, 'strerror', None) or reason}; "
                              "offline? download it and pass the file instead)") from None
    except TimeoutError:
        raise InputError(url, f"download timed out after {timeout:g} s") from None
    except OSError as err:
        raise InputError(url, f"download failed ({err.strerror or err})") from None


def read_input(item: Input, *, max_pixels: int | None = None) -> np.ndarray:
    """Read one input (file or URL) as ``np.ndarray[H, W, 3]`` uint8 RGB (see backbone.images.read_image).
    Raises InputError naming the input as the user gave it."""
    from backbone.images import MAX_PIXELS, read_image

    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if not is_url(item):
        return read_image(item, max_pixels=limit)
    with local_file(item) as path:
        try:
            return read_image(path, max_pixels=limit)
        except InputError as err:
            raise InputError(str(item), err.problem) from None
