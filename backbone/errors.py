"""The one exception type for problems with what a user gave us.

Every command-line entry point catches :class:`InputError` and prints its message as a single line
(``error: <file>: <problem>``) with exit code 2, so messages must name the file and the problem and
must not contain newlines. Library code raises it; it never prints.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """A bad input file, folder, option or checkpoint. ``str(err)`` is one line naming the file."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")

    def __reduce__(self):  # keep (path, problem) across process pools: workers raise it, the parent reports it
        return (type(self), (self.path, self.problem))
