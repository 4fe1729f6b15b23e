"""Run statistics: bounded latency samples, per-stream accounting, and the final summary.

Everything here is plain data; the pipeline fills it in and the CLI prints it. Latency
samples are kept in bounded reservoirs, so a run of any length has constant memory.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from typing import Any

import numpy as np

__all__ = ["LatencyReservoir", "RunSummary", "StreamStats", "TimingBreakdown", "merge_counts"]


class LatencyReservoir:
    """Keeps a uniform random sample of at most ``size`` values (Vitter's algorithm R).

    Args:
        size: Maximum values kept.
        seed: Seed of the sampling RNG (runs are reproducible).
    """

    def __init__(self, size: int = 20_000, seed: int = 0) -> None:
        self.size = size
        self.count = 0
        self.total = 0.0
        self._values: list[float] = []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        """Record one value."""
        self.count += 1
        self.total += value
        if len(self._values) < self.size:
            self._values.append(value)
        else:
            j = self._rng.randrange(self.count)
            if j < self.size:
                self._values[j] = value

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the sample, 0.0 when empty."""
        return float(np.percentile(self._values, q)) if self._values else 0.0

    @property
    def mean(self) -> float:
        """Mean of all values seen (not only the sample)."""
        return self.total / self.count if self.count else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class TimingBreakdown:
    """Per-window time split, in seconds: mean / p50 / p99 of each part."""

    queue_wait_s: tuple[float, float, float]
    inference_s: tuple[float, float, float]
    post_s: tuple[float, float, float]
    latency_s: tuple[float, float, float]

    @staticmethod
    def of(reservoirs: dict[str, LatencyReservoir]) -> TimingBreakdown:
        """Build from reservoirs named ``queue_wait``, ``inference``, ``post``, ``latency``."""

        def triple(name: str) -> tuple[float, float, float]:
            r = reservoirs[name]
            return (r.mean, r.percentile(50), r.percentile(99))

        return TimingBreakdown(triple("queue_wait"), triple("inference"), triple("post"), triple("latency"))


@dataclasses.dataclass(slots=True)
class StreamStats:
    """Running accounting of one stream (mutable; owned by the pipeline)."""

    stream_id: str
    samples_in: int = 0
    gap_samples: int = 0
    windows: int = 0
    frames_expected: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    ended: bool = False
    error: str = ""
    error_class: str = ""
    hint: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RunSummary:
    """What a pipeline run did.

    Args:
        streams: Per-stream accounting.
        elapsed_s: Wall time of the run.
        audio_s: Audio received, all streams.
        frames: Feature frames emitted.
        rtf: Wall time / audio time (per stream for one stream; < 1 is faster than real time).
        inference_rtf: Model busy time / audio time inferred.
        timing: Per-window breakdown (queue wait, inference, post-processing, latency).
        dropped: Drops by reason (channel overflow, deadline, breaker, errors, shutdown).
        errors: Errors by class.
        batches: Inference batches run.
        mean_batch_size: Mean windows per batch.
        stopped: True when the run was stopped (signal or :meth:`Pipeline.stop`).
        forced: True when the drain exceeded ``shutdown_timeout_s`` and work was cancelled.
        health: Final health per stage, ``{stage: [state, *reasons]}``.
        peak_rss_bytes: Highest resident memory seen during the run.
    """

    streams: tuple[StreamStats, ...]
    elapsed_s: float
    audio_s: float
    frames: int
    rtf: float
    inference_rtf: float
    timing: TimingBreakdown
    dropped: dict[str, int]
    errors: dict[str, int]
    batches: int
    mean_batch_size: float
    stopped: bool = False
    forced: bool = False
    health: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    peak_rss_bytes: float = 0.0

    @property
    def failed_streams(self) -> tuple[StreamStats, ...]:
        """Streams that ended with an error."""
        return tuple(s for s in self.streams if s.error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = dataclasses.asdict(self)
        out["streams"] = [dataclasses.asdict(s) for s in self.streams]
        return out

    def lines(self) -> list[str]:
        """A human-readable multi-line summary."""
        t = self.timing

        def ms(value_s: float) -> str:
            return f"{value_s * 1000:.1f}"

        lines = [
            f"streams {len(self.streams)}  audio {self.audio_s:.1f} s  frames {self.frames}  "
            f"elapsed {self.elapsed_s:.2f} s  RTF {self.rtf:.3f}  inference RTF {self.inference_rtf:.3f}",
            f"latency p50 {ms(t.latency_s[1])} ms  p99 {ms(t.latency_s[2])} ms  "
            f"batches {self.batches} (mean size {self.mean_batch_size:.2f})",
            f"per window (mean/p50/p99 ms): queue-wait {'/'.join(ms(v) for v in t.queue_wait_s)}  "
            f"inference {'/'.join(ms(v) for v in t.inference_s)}  post {'/'.join(ms(v) for v in t.post_s)}",
            "drops: " + (", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"),
        ]
        if self.errors:
            lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())))
        for s in self.failed_streams:
            lines.append(f"stream {s.stream_id} failed ({s.error_class}): {s.error}")
        if self.stopped:
            lines.append("stopped on request" + (" (drain timed out: work was cancelled)" if self.forced else ", drained"))
        return lines


def merge_counts(*counters: collections.Counter[str] | dict[str, int]) -> dict[str, int]:
    """Sum several reason -> count maps, leaving out zeros."""
    total: collections.Counter[str] = collections.Counter()
    for c in counters:
        total.update(c)
    return {k: v for k, v in sorted(total.items()) if v}
