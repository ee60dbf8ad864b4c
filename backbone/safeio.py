"""Reading files a user gave us without letting them hang the program or exhaust its memory.

Two helpers, each raising one :class:`~backbone.errors.InputError` line naming the file:

* :func:`regular_file`: a path must be an existing regular file (or a link to one) below a size
  limit; folders, FIFOs, devices (``/dev/zero``, ``/dev/stdin`` on a terminal) and sockets are refused
  by ``os.stat`` before anything opens them, so nothing blocks on a pipe nobody writes to;
* :func:`load_json`: JSON with a size limit (:data:`MAX_JSON_BYTES`), a nesting limit
  (:data:`MAX_JSON_DEPTH`) and a digit limit on integers (:data:`MAX_INT_DIGITS`), so a 100,000-deep
  array or a 5,000-digit id is one line rather than a RecursionError, a ValueError from Python's
  int-to-str limit, or an OverflowError wherever the number is used.

``NaN`` and ``Infinity`` literals still parse (Python's json accepts them); callers that need finite
numbers check them, naming the field.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from backbone.errors import InputError

#: Largest JSON file read (bytes). COCO's largest file, ``instances_train2017.json``, is 448 MB.
MAX_JSON_BYTES = 1 << 30
#: Deepest nesting of arrays/objects accepted. A COCO file nests 4 deep (segmentation polygons).
MAX_JSON_DEPTH = 64
#: Most digits in a JSON integer: int64 has 19; ids, sizes and counts never need more.
MAX_INT_DIGITS = 20


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def stat_path(path: str | os.PathLike, *, expected: str = "a file") -> os.stat_result:
    """``os.stat`` of ``path`` (links followed), which must exist and not be a folder; what it is otherwise
    (regular file, FIFO, device) is the caller's to decide. ``expected`` names what was wanted, with its
    article ("an image file"), for the folder message.

    Raises:
        InputError: missing, a folder, a name too long for the file system, or not stat-able (permission).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except OSError as err:  # ENAMETOOLONG, ELOOP, ENOTDIR, ...
        raise InputError(p, f"cannot read ({err.strerror or err})") from None
    except ValueError:  # embedded NUL byte
        raise InputError(p, "not a valid path") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(p, f"is a folder, expected {expected}")
    return st


def regular_file(path: str | os.PathLike, *, max_bytes: int | None = None, what: str = "file") -> os.stat_result:
    """``os.stat`` of ``path``, which must be a regular file (links followed) of at most ``max_bytes``.

    Raises:
        InputError: missing, a folder, a FIFO/device/socket, larger than ``max_bytes``, a name too long
            for the file system, or not stat-able (permission).
    """
    p = Path(path)
    st = stat_path(p, expected=f"a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(p, f"is {_kind(st.st_mode)}, expected a regular {what}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(p, f"{what} is {st.st_size / 1e6:.0f} MB, above the {max_bytes / 1e6:.0f} MB limit")
    return st


def read_bytes(path: str | os.PathLike, *, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (see :func:`regular_file`), never more than ``max_bytes``
    (a file that grows while read is refused too)."""
    p = Path(path)
    regular_file(p, max_bytes=max_bytes, what=what)
    return read_checked(p, max_bytes=max_bytes, what=what)


def read_checked(path: Path, *, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path``, a regular file its caller has already checked, never more than ``max_bytes``
    (a file that grew since it was checked is refused); one InputError for an unreadable file."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as err:
        raise InputError(path, f"cannot read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise InputError(path, f"{what} grew above the {max_bytes / 1e6:.0f} MB limit while read")
    return data


class _TooLong(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooLong(text)
    return int(text)


def _depth_exceeds(obj: Any, limit: int) -> bool:
    """True when ``obj`` nests lists/dicts deeper than ``limit``: walked level by level, without recursion
    (about 1 s for the 860,000 annotations of COCO's train2017 file)."""
    level = [obj] if isinstance(obj, (list, dict)) else []
    for _ in range(limit):
        if not level:
            return False
        level = [c for item in level for c in (item.values() if type(item) is dict else item)
                 if type(c) is list or type(c) is dict]
    return bool(level)


def load_json(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse the user's JSON file ``path`` within the limits of this module (see its docstring).

    Raises:
        InputError: one line naming the file: not a regular file, too large, not UTF-8 JSON, nested
            deeper than ``max_depth``, or an integer longer than :data:`MAX_INT_DIGITS` digits.
    """
    p = Path(path)
    data = read_bytes(p, max_bytes=max_bytes, what="JSON file")
    try:
        obj = json.loads(data, parse_int=_parse_int)
    except _TooLong as err:
        raise InputError(p, f"integer with {len(str(err).lstrip('-'))} digits, above the {MAX_INT_DIGITS}-digit "
                            "limit") from None
    except json.JSONDecodeError as err:
        raise InputError(p, f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except UnicodeDecodeError:
        raise InputError(p, "not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise InputError(p, f"JSON nested too deep (limit {max_depth} levels)") from None
    except (ValueError, MemoryError) as err:  # e.g. a float literal Python cannot convert
        raise InputError(p, f"not valid JSON ({type(err).__name__})") from None
    if _depth_exceeds(obj, max_depth):
        raise InputError(p, f"JSON nested too deep (limit {max_depth} levels)")
    return obj
