"""The ``logstore`` command."""

from __future__ import annotations

import argparse
import sys

from logstore import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logstore",
        description="logstore: a partitioned commit log served over gRPC",
    )
    parser.add_argument("--version", action="version", version=f"logstore {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)
