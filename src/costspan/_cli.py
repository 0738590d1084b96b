"""The ``costspan`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from costspan._version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costspan", description="LLM spend made visible and bounded with OpenTelemetry."
    )
    parser.add_argument("--version", action="version", version=f"costspan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="run an instrumented app against a local OpenAI-compatible server and print its spans",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from costspan import _demo

        return _demo.run(sys.stdout)
    return 2  # argparse rejects unknown commands before this point


if __name__ == "__main__":
    sys.exit(main())
