"""What every console script shares: logging set-up and turning user errors into one line + exit code.

Each ``main(argv=None) -> int`` parses its arguments, then calls :func:`run_command`, which runs the
chosen subcommand and maps :class:`~backbone.errors.InputError` to ``error: <file>: <problem>`` on
stderr with exit code 2 (no traceback), and Ctrl-C to exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable

from backbone.errors import InputError

log = logging.getLogger(__name__)


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at emit time (not the one at set-up time), so a
    replaced stderr (pytest's capture, a redirect) never receives records for a closed stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: int = 0) -> None:
    """INFO to stderr by default, DEBUG with -v; one line per record."""
    level = logging.DEBUG if verbose > 0 else logging.INFO
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Run ``func(args)``; turn user errors into one stderr line and a non-zero exit code."""
    setup_logging(getattr(args, "verbose", 0))
    try:
        return int(func(args) or 0)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def wants_progress() -> bool:
    """Progress bars only on a terminal (tqdm's ``disable`` argument is ``not wants_progress()``)."""
    return sys.stderr.isatty()


def build_parser(prog: str, doc: str, package: str, commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    """The argparse parser of a console script: ``doc``'s first paragraph as description, the rest as
    epilog, and one subcommand per ``commands`` entry ``name -> (module under package.commands, help)``;
    each module has ``add_arguments(parser)`` and ``main(args) -> int`` (set as ``args.func``)."""
    description, _, epilog = doc.partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in commands.items():
        module = importlib.import_module(f"{package}.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser
