"""The one exception type for problems with what a user gave us.

Every command-line entry point catches :class:`InputError` and prints its message as a single line
(``error: <file>: <problem>``) with exit code 2, so messages must name the file and the problem and
must not contain newlines. Library code raises it; it never prints.

Names come from users (file names, ``file_name`` values, class names in a checkpoint): :func:`escape`
shows their control characters (newline, ANSI escapes, ...) as ``\\n``, ``\\x1b`` so that a name cannot
forge a second line or recolour the terminal. :class:`InputError` escapes its path and problem itself;
code that prints a user's name elsewhere should pass it through :func:`escape`.
"""

from __future__ import annotations

import os

#: Longest value :func:`short_repr` shows (a 1 MB list as an "id" must not become a 1 MB error line).
SHORT_REPR_CHARS = 80


def escape(text: object) -> str:
    """``str(text)`` with every non-printable character (newline, tab, ESC, zero-width and line-separator
    characters, undecodable bytes of a file name) written as a Python escape (``\\n``, ``\\x1b``,
    ``\\u2028``, ``\\udcff``). Printable text, non-ASCII letters included, is kept as it is; applying it
    twice changes nothing more."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def has_control(text: str) -> bool:
    """True when ``text`` holds a control character (C0/C1: newline, tab, ESC, DEL, ...): names from files
    with these are refused where they are read (a class name or ``file_name`` never needs one)."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def short_repr(value: object, limit: int = SHORT_REPR_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with ``...``), for values from a user's file."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # very deep nesting; a huge int (Python's 4300-digit limit)
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputError(Exception):
    """A bad input file, folder, option or checkpoint. ``str(err)`` is one line naming the file."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = escape(" ".join(str(problem).split()))  # keep it on one line
        shown = None if self.path is None else escape(os.fsdecode(self.path))
        super().__init__(self.problem if shown is None else f"{shown}: {self.problem}")

    def __reduce__(self):  # keep (path, problem) across process pools: workers raise it, the parent reports it
        return (type(self), (self.path, self.problem))
