"""Scoring of matcher detections against labelled streams (used by ``matcher_eval.py``).

A detection is a true positive when its span overlaps a true repeat (an occurrence with
index >= 1) by at least half of the shorter of the two, and its ``first_*`` span overlaps an
earlier occurrence of the same pattern by at least half of the shorter of the two. Each true
repeat is credited once; any other detection is a false positive.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Detection", "Score", "score_stream"]


@dataclasses.dataclass(frozen=True, slots=True)
class Detection:
    first_start_s: float
    first_end_s: float
    start_s: float
    end_s: float
    score: float
    detected_at_s: float


@dataclasses.dataclass(slots=True)
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    scored: list[tuple[float, bool]] = dataclasses.field(default_factory=list)
    fp_on_negatives: int = 0
    audio_s: float = 0.0

    def add(self, other: "Score") -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.latencies_s += other.latencies_s
        self.scored += other.scored
        self.fp_on_negatives += other.fp_on_negatives
        self.audio_s += other.audio_s

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def latency(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    @property
    def false_alarms_per_hour(self) -> float:
        return self.fp / (self.audio_s / 3600.0) if self.audio_s else 0.0


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _half(a0: float, a1: float, b0: float, b1: float) -> bool:
    return _overlap(a0, a1, b0, b1) >= 0.5 * min(a1 - a0, b1 - b0)


def score_stream(stream, detections: list[Detection]) -> Score:  # type: ignore[no-untyped-def]
    """Match detections against ``stream.occurrences`` (see module docstring)."""
    out = Score(audio_s=stream.duration_s)
    repeats = [o for o in stream.occurrences if o.index >= 1]
    credited: set[int] = set()
    for d in sorted(detections, key=lambda d: d.detected_at_s):
        hit = None
        for i, r in enumerate(repeats):
            if i in credited or not _half(d.start_s, d.end_s, r.start_s, r.end_s):
                continue
            earlier = [o for o in stream.occurrences if o.pattern == r.pattern and o.index < r.index]
            if any(_half(d.first_start_s, d.first_end_s, o.start_s, o.end_s) for o in earlier):
                hit = i
                break
        out.scored.append((d.score, hit is not None))
        if hit is None:
            out.fp += 1
            if any(_overlap(d.start_s, d.end_s, a, b) > 0 for a, b in stream.negatives):
                out.fp_on_negatives += 1
        else:
            credited.add(hit)
            out.tp += 1
            out.latencies_s.append(d.detected_at_s - repeats[hit].end_s)
    out.fn = len(repeats) - len(credited)
    return out
