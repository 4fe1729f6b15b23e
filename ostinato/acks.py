"""Which client audio frames a stream has fully processed (``through_seq``), sans-IO.

An ``audio`` frame is fully processed once its samples went through the resampler, the
matcher, and every window they completed was inferred and its features queued for the
client. The session reports the highest such ``seq`` as ``through_seq`` in ``status`` (and
``ready.info``), so a client may drop it from its resend buffer, and the ``status`` that
answers ``flush`` carries the ``seq`` of the last frame sent before the flush.

The session tells the tracker what happens (fed, consumed, window submitted/done, samples
matched); the tracker holds one entry per consumed frame until it is done (bounded by the
stream's queues: at most ``max_queue`` windows and the matcher's queue are in flight).
"""

from __future__ import annotations

import collections
from typing import Any

__all__ = ["AckTracker"]


class AckTracker:
    """Tracks the highest client audio ``seq`` whose output is complete."""

    def __init__(self) -> None:
        self._fed: collections.deque[tuple[Any, int]] = collections.deque()
        self._pending: collections.deque[tuple[int, int, int]] = collections.deque()  # (seq, windows, samples)
        self.windows_submitted = 0
        self.windows_done = 0
        self.matched_samples = 0
        self._through: int | None = None

    def fed(self, chunk: Any, seq: int | None) -> None:
        """A client frame ``seq`` entered the input queue as ``chunk``."""
        if seq is not None:
            self._fed.append((chunk, seq))

    def consumed(self, chunk: Any, samples_in: int) -> None:
        """The processor finished ``chunk``: its windows are submitted, its audio queued for the
        matcher; ``samples_in`` is the stream's pipeline-rate sample count after it."""
        if not any(c is chunk for c, _ in self._fed):
            return  # gap filling or a server-side file: no client seq
        seq = -1
        while self._fed:
            c, seq = self._fed.popleft()  # frames dropped by the queue policy before it go too
            if c is chunk:
                break
        self._pending.append((seq, self.windows_submitted, samples_in))

    def settle(self, samples_in: int) -> None:
        """The input queue is empty and the processor idle: frames still marked fed were
        dropped by the overflow policy; they need nothing more (they count as processed)."""
        if self._fed:
            seq = self._fed[-1][1]
            self._fed.clear()
            self._pending.append((seq, self.windows_submitted, samples_in))

    def window_submitted(self) -> None:
        """A window went to inference (or was dropped for backlog: then also call done)."""
        self.windows_submitted += 1

    def window_done(self) -> None:
        """A window's features were queued for the client (or the window was dropped)."""
        self.windows_done += 1

    def matched(self, samples: int) -> None:
        """The matcher consumed ``samples`` more pipeline-rate samples."""
        self.matched_samples += samples

    def through(self, matching: bool) -> int | None:
        """The highest fully processed ``seq`` (``None`` before the first)."""
        while self._pending:
            seq, windows, samples = self._pending[0]
            if windows > self.windows_done or (matching and samples > self.matched_samples):
                break
            self._pending.popleft()
            self._through = seq
        return self._through
