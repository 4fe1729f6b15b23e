"""A dependency-free terminal progress bar for the CLI (library code never prints).

Library functions that take long accept a ``progress`` callback ``(step, done, total)``;
the CLI passes :meth:`ProgressBar.update`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ostinato.runtime._closing import Closing

__all__ = ["ProgressBar"]

_WIDTH = 28


class ProgressBar(Closing):
    """Draws ``step [#####.....] 12/40 3.1s`` on stderr; plain lines when not a terminal.

    Args:
        stream: Where to draw (default stderr).
        min_interval_s: Minimum time between redraws.
    """

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.1) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._min_interval_s = min_interval_s
        self._last_draw = 0.0
        self._step = ""
        self._started = time.monotonic()

    def update(self, step: str, done: float, total: float) -> None:
        """Report progress of ``step``: ``done`` out of ``total`` units."""
        now = time.monotonic()
        new_step = step != self._step
        if new_step:
            if self._step and self._tty:
                self._stream.write("\n")
            self._step = step
            self._started = now
        finished = total > 0 and done >= total
        if not (new_step or finished or now - self._last_draw >= self._min_interval_s):
            return
        self._last_draw = now
        elapsed_s = now - self._started
        if self._tty:
            frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
            bar = "#" * int(frac * _WIDTH) + "." * (_WIDTH - int(frac * _WIDTH))
            self._stream.write(f"\r{step:<24} [{bar}] {done:g}/{total:g} {elapsed_s:5.1f}s")
        elif finished:
            # Not a terminal (CI logs, pipes): one line per finished step, no redraws.
            self._stream.write(f"{step}: {done:g}/{total:g} ({elapsed_s:.1f}s)\n")
        self._stream.flush()

    def close(self) -> None:
        """End the current line."""
        if self._step and self._tty:
            self._stream.write("\n")
            self._stream.flush()
        self._step = ""

