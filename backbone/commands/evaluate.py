"""`backbone evaluate`: not built yet (see README, "Status")."""

from __future__ import annotations

import argparse

from backbone.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    raise InputError(None, "'backbone evaluate' is not built yet")
