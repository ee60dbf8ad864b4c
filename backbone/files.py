"""Files users give and get: JSON input with one-line errors, and atomic outputs (temp file + rename).

A killed process therefore leaves either the old file or the complete new one, never half of one.
Outputs may not overwrite a file the user gave as input.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from backbone.errors import InputError


def _umask() -> int:
    """The process' umask (read by setting and restoring it: os offers no plain getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    Raises :class:`InputError` if ``path`` is one of ``inputs`` (we never overwrite a user's input)
    or if its folder cannot be created.
    """
    target = Path(path)
    for item in inputs:
        with contextlib.suppress(OSError):
            if target.exists() and os.path.samefile(target, item):
                raise InputError(target, "output would overwrite an input file; choose another output path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(target.parent, f"cannot create output folder ({err.strerror})") from None
    if target.is_dir():
        raise InputError(target, "output path is a folder, expected a file")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:  # mkstemp makes the file 0600; give it the mode a plain open() would (0666 less the umask)
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _same_place(a: Path, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same inode, or the same resolved path."""
    with contextlib.suppress(OSError, ValueError):
        if a.exists() and os.path.samefile(a, b):
            return True
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        return a.resolve() == Path(b).resolve()
    return False


def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), what: str = "--out") -> Path:
    """Refuse, before any work starts, an output file that cannot or must not be written.

    Refused (one :class:`InputError` line): a path that is, or resolves to, one of ``inputs`` (images,
    checkpoints, list files: we never overwrite what the user gave); an existing path that is not a
    regular file (a folder, a device such as ``/dev/stdout``, a FIFO); a name too long for the file
    system; a folder that cannot be created or written (missing permission, read-only, ``/sys``), tried
    by creating and removing a temporary file there. Returns ``path`` as a :class:`Path`.
    """
    target = Path(path)
    for item in inputs:
        if _same_place(target, item):
            raise InputError(target, f"{what} would overwrite an input file ({os.fspath(item)}); "
                                     "choose another output path")
    if os.path.lexists(target):
        try:
            st = os.stat(target)
        except OSError as err:
            raise InputError(target, f"{what}: cannot use this path ({err.strerror or err})") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(target, f"{what} is a folder, expected a file")
        if not stat.S_ISREG(st.st_mode) or os.path.islink(target):
            raise InputError(target, f"{what} is not a regular file (a device, pipe or link); "
                                     "choose a new or regular file")
    if len(target.name.encode("utf-8", "surrogateescape")) > 255:
        raise InputError(target, f"{what}: file name longer than 255 bytes")
    check_output_folder(target.parent, what=what)
    return target


def check_output_folder(folder: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that files can be created in it (one InputError line if not)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(out, f"{what}: not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise InputError(out, f"{what}: cannot write here ({err.strerror or err})") from None
    return out


def read_json(path: str | os.PathLike) -> Any:
    """Parse a user's JSON file; every failure is one :class:`InputError` line naming the file.

    Bounded as :func:`backbone.safeio.load_json` (regular files only, size, nesting and integer-digit
    limits). NaN/Infinity literals parse (Python's json accepts them): callers that need finite numbers check."""
    from backbone.safeio import load_json

    return load_json(path)


def write_bytes(path: str | os.PathLike, data: bytes, **kwargs: Any) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path, **kwargs) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None, **kwargs: Any) -> None:
    """Atomically write ``obj`` as JSON to ``path`` (NaN and infinity are refused: they are not JSON)."""
    text = json.dumps(obj, indent=indent, allow_nan=False)
    write_bytes(path, text.encode("utf-8"), **kwargs)
