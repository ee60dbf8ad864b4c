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


def _chosen(argv: list[str] | None, commands: dict[str, tuple[str, str]]) -> str | None:
    """The subcommand named on the command line (the first argument that is one), or None."""
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if a in commands), None)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("goingdeeper-det")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser(prog: str, doc: str, package: str, commands: dict[str, tuple[str, str]],
                 argv: list[str] | None = None, *, load: str = "chosen") -> argparse.ArgumentParser:
    """The argparse parser of a console script: ``doc``'s first paragraph as description, the rest as
    epilog, and one subcommand per ``commands`` entry ``name -> (module under package.commands, help)``;
    each module has ``add_arguments(parser)`` and ``main(args) -> int`` (set as ``args.func``).

    Only the module of the subcommand named in ``argv`` is imported (``load="all"`` imports every one), so
    ``--help`` and light commands start without importing torch. ``-v/--verbose`` and ``--version`` are
    accepted before or after the subcommand."""
    description, _, epilog = doc.partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv, commands)
    for name, (module_name, help_text) in commands.items():
        if load != "all" and name != chosen:
            sub.add_parser(name, help=help_text)  # listed in --help; never parsed (not chosen)
            continue
        module = importlib.import_module(f"{package}.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=_Formatter)
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
        p.add_argument("--version", action="version", version=f"{prog} {_version()}")
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and shows every option's default, as ``(default: X)``, unless
    its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if ("default" in help_text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or isinstance(action, argparse._VersionAction)):
            return help_text
        return help_text + " (default: %(default)s)"
