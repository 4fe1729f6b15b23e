"""``ostinato devices``: list audio input devices (for ``ostinato run --source mic:DEVICE``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``devices`` subcommand."""
    p = sub.add_parser("devices", help="list audio input devices (needs PortAudio: the `mic` extra)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per input device; 1 when there is none."""
    from ostinato.stream.source_mic import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no audio input devices found")
        print("hint: connect a microphone, check the OS audio permissions, or use --source file:PATH / stdin:RATE:FORMAT")
        return 1
    print(f"{'':2}{'index':>5}  {'channels':>8}  {'rate':>7}  {'host API':<12}  name")
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark:2}{d['index']:>5}  {d['channels']:>8}  {d['sample_rate']:>7.0f}  {d['hostapi']:<12}  {d['name']}")
    print("(* = default; use --source mic:INDEX or mic:NAME)")
    return 0
