"""The ``ostinato`` command line.

Each subcommand lives in its own ``ostinato/cmd_*.py`` module exposing
``register(subparsers)``; the parser built there sets ``func(args) -> int``.
Errors from ostinato's own error trees are shown as ``error: …`` plus a hint, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ostinato import __version__
from ostinato.runtime.errors import HintedError

__all__ = ["main", "build_parser"]

# One line per subcommand module; order is the order in --help.
_COMMAND_MODULES = (
    "ostinato.cmd_export",
    "ostinato.cmd_features",
    "ostinato.cmd_describe",
    "ostinato.cmd_doctor",
    "ostinato.cmd_serve",
    "ostinato.cmd_stream_to",
    "ostinato.cmd_run",
    "ostinato.cmd_devices",
    "ostinato.cmd_match",
    "ostinato.cmd_library",
    "ostinato.cmd_plan",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ostinato",
        description="Real-time audio stream processor: Wav2Vec2 on ONNX Runtime, "
        "live recurring-pattern detection, pattern library.",
    )
    parser.add_argument("--version", action="version", version=f"ostinato {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except HintedError as e:  # ostinato's own error trees: a user-facing message and hint
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
