"""Two pieces of :class:`~ostinato.stream.matcher.PatternMatcher` state kept beside its tracks.

:class:`PeriodicRegions`
    spans of the stream covered by *periodic* tracks — a track much longer than its own lag,
    i.e. a loop or a groove repeating bar after bar. A finished track lying mostly inside
    such a span *and repeating audio of the same loop* is music's own repetition, not a
    recurring pattern; a track there whose earlier occurrence lies before the loop began (the
    whole loop or jingle heard again later) is a recurring pattern (``docs/matcher.md``).
:class:`NoveltyRun`
    a run of consecutive segments whose best match in the buffer stays below
    ``novelty_threshold``, reported once as one novelty span.

Both are bounded: at most 64 regions (oldest dropped, and pruned as the ring moves on), and a
novelty run is cut at ``novelty_max_s``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from ostinato.stream.matcher_config import MatcherConfig

__all__ = ["NoveltyRun", "PeriodicRegions", "within_loop"]


class _Track(Protocol):
    serial: int  # unique per track (an id() is reused once a track is collected)
    start: int
    last_hit: int
    lag: int
    periodic: bool


def within_loop(earlier_start: int, loop_start: int, period: int, slack: int) -> bool:
    """Whether audio first heard at frame ``earlier_start`` belongs to a loop whose periodic
    track (lag ``period``) starts at ``loop_start``: the loop's first bar began about one
    period before that track (``slack`` frames of tolerance, plus one more period)."""
    return earlier_start >= loop_start - 2 * period - slack


class PeriodicRegions:
    """Frame spans ``[start, end]`` of periodic tracks, extended while those tracks grow.

    Args:
        limit: Regions kept (the oldest is dropped).
        slack: Frames of tolerance of :func:`within_loop`.
    """

    def __init__(self, limit: int = 64, slack: int = 25) -> None:
        self._regions: collections.deque[list[int]] = collections.deque(maxlen=limit)
        self._slack = slack

    def mark(self, track: _Track) -> None:
        """``track`` was found periodic: its span (and later growth) becomes a region."""
        self._regions.append([track.start, track.last_hit, track.serial, max(track.lag, 1)])

    def update(self, tracks: Iterable[_Track]) -> None:
        """Extend each region to where its (still live) periodic track has reached."""
        live = {t.serial: t for t in tracks if t.periodic}
        for region in self._regions:
            track = live.get(region[2])
            if track is not None:
                region[1] = max(region[1], track.last_hit)

    def covers(self, start: int, end: int, lag: int) -> bool:
        """Whether frames ``[start, end]``, repeating frames ``[start - lag, end - lag]``, are
        loop-internal: more than half of them lie in one region and the earlier occurrence
        lies in the same loop (:func:`within_loop`)."""
        length = max(1, end - start + 1)
        return any(
            min(end, r1) - max(start, r0) + 1 > 0.5 * length and within_loop(start - lag, r0, period, self._slack)
            for r0, r1, _, period in self._regions
        )

    def prune(self, oldest: int) -> None:
        """Forget regions that ended before frame ``oldest`` (out of the ring)."""
        while self._regions and self._regions[0][1] < oldest:
            self._regions.popleft()


class NoveltyRun:
    """Consecutive novel segments, folded into one ``(start, end, score)`` span.

    Args:
        config: Matcher settings (``novelty_threshold``, ``novelty_max_s``, segment geometry).
    """

    def __init__(self, config: MatcherConfig) -> None:
        self.config = config
        self._best: list[float] = []
        self._start = 0

    def step(self, best: float | None, enough_history: bool, ring_end: int, flush: bool) -> tuple[int, int, float] | None:
        """One segment step: ``best`` is its best similarity in the buffer (``None``: none).

        Returns:
            ``(first frame, last frame, score)`` of a run that ended (or reached
            ``novelty_max_s``, or the stream ended), else ``None``.
        """
        c = self.config
        threshold = c.novelty_threshold
        novel = not flush and enough_history and best is not None and threshold is not None and best < threshold
        if novel and best is not None:
            if not self._best:
                self._start = ring_end - c.frames(c.segment_s)
            self._best.append(best)
            if len(self._best) * c.segment_hop_s < c.novelty_max_s:
                return None
        if not self._best:
            return None
        end = ring_end - 1 if novel or flush else ring_end - c.frames(c.segment_hop_s) - 1
        score = float(np.clip(1.0 - float(np.mean(self._best)), 0.0, 1.0))
        self._best = []
        return self._start, max(end, self._start), score
