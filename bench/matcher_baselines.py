"""Independent baselines for ``matcher_eval.py``, run on the same frames as the matcher.

``SelfSimilarity``
    exhaustive frame-level self-similarity on log-mel (centred, cepstral, running-normalised
    unit frames, like the matcher's): every new frame is compared with every frame in the
    buffer, and a diagonal accumulator per lag (tolerating ±1 frame of drift per frame)
    reports runs of similar frames at least ``min_pattern_s`` long.
``Stumpi``
    STUMPY's incremental matrix profile (``stumpy.stumpi``, z-normalised Euclidean distance,
    0.5 s subsequences) on a 1-D projection of the same frames (the first principal
    component of the first 10 s); consecutive nearest neighbours at a steady lag below a
    distance threshold form a detection.

Both emit :class:`~matcher_scoring.Detection` with the same span conventions as the matcher.
"""

from __future__ import annotations

import numpy as np

from matcher_scoring import Detection

__all__ = ["SelfSimilarity", "Stumpi"]

FPS = 50.0


def _end_s(frame: int) -> float:
    return (frame * 320 + 400) / 16000


class SelfSimilarity:
    """Exhaustive diagonal search over a ring of unit frames."""

    def __init__(self, buffer_s: float, threshold: float, min_pattern_s: float = 1.5, min_lag_s: float = 1.0) -> None:
        self.capacity = int(buffer_s * FPS)
        self.threshold = threshold
        self.min_frames = int(min_pattern_s * FPS)
        self.min_lag = int(min_lag_s * FPS)
        self.frames: np.ndarray | None = None
        self.count = 0
        self.run = np.zeros(self.capacity, np.int32)  # run length per lag (index = lag)
        self.gap = np.zeros(self.capacity, np.int32)
        self.out: list[Detection] = []

    def push(self, unit: np.ndarray, active: np.ndarray) -> None:
        if self.frames is None:
            self.frames = np.zeros((self.capacity, unit.shape[1]), np.float32)
        for x, ok in zip(unit, active, strict=True):
            t = self.count
            n = min(t, self.capacity - 1)
            hit = np.zeros(self.capacity, bool)
            if ok and n > self.min_lag:
                lags = np.arange(1, n + 1)
                sims = self.frames[(t - lags) % self.capacity] @ x
                hit[1 : n + 1] = sims >= self.threshold
                hit[: self.min_lag] = False
            prev = self.run
            best = np.maximum(prev, np.maximum(np.roll(prev, 1), np.roll(prev, -1)))  # ±1 lag drift
            gap = np.where(hit, 0, self.gap + 1)
            ended = (prev >= self.min_frames) & (gap >= 5)
            for lag in np.nonzero(ended)[0]:
                length = int(prev[lag])
                end = t - int(gap[lag])
                start = end - length + 1
                if length <= lag:  # not self-overlapping (loops are not patterns)
                    self.out.append(Detection((start - lag) / FPS, _end_s(end - lag), start / FPS, _end_s(end), 1.0, _end_s(t)))
            self.run = np.where(hit, best + 1, np.where(gap < 5, prev, 0))
            self.run[ended] = 0
            self.gap = gap
            self.frames[t % self.capacity] = x
            self.count += 1

    def flush(self) -> list[Detection]:
        t = self.count
        for lag in np.nonzero(self.run >= self.min_frames)[0]:
            end = t - 1 - int(self.gap[lag])
            start = end - int(self.run[lag]) + 1
            if self.run[lag] <= lag:
                self.out.append(Detection((start - lag) / FPS, _end_s(end - lag), start / FPS, _end_s(end), 1.0, _end_s(t)))
        return _dedupe(self.out)


def _dedupe(dets: list[Detection]) -> list[Detection]:
    """One detection per current span (the longest), like the matcher's overlap rule."""
    out: list[Detection] = []
    for d in sorted(dets, key=lambda d: -(d.end_s - d.start_s)):
        if all(min(d.end_s, o.end_s) - max(d.start_s, o.start_s) <= 0.5 * (d.end_s - d.start_s) for o in out):
            out.append(d)
    return sorted(out, key=lambda d: d.detected_at_s)


class Stumpi:
    """STUMPY ``stumpi`` on a 1-D projection, detections from steady nearest-neighbour lags.

    The matrix profile is computed once per stream (:meth:`profile`, the costly part);
    :meth:`detect` turns it into detections for any threshold.
    """

    def __init__(self, window_s: float = 0.5, min_pattern_s: float = 1.5, min_lag_s: float = 1.0, warmup_s: float = 10.0) -> None:
        self.m = int(window_s * FPS)
        self.min_frames = int(min_pattern_s * FPS)
        self.min_lag = int(min_lag_s * FPS)
        self.warmup = int(warmup_s * FPS)

    def profile(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """``(P, I, first)``: newest-subsequence distance and neighbour per update; update
        ``k`` concerns the subsequence starting at ``first + k``."""
        import stumpy

        warm = unit[: self.warmup]
        axis = np.linalg.svd(warm - warm.mean(axis=0), full_matrices=False)[2][0]
        rng = np.random.default_rng(0)
        series = unit @ axis + 1e-6 * rng.standard_normal(unit.shape[0])  # no flat (undefined) windows
        stream = stumpy.stumpi(series[: self.warmup], self.m, egress=False)
        dist, nn = [], []
        for v in series[self.warmup :]:
            stream.update(float(v))
            dist.append(float(stream.P_[-1]))
            nn.append(int(stream.I_[-1]))
        return np.asarray(dist), np.asarray(nn), self.warmup - self.m + 1

    def detect(self, dist: np.ndarray, nn: np.ndarray, first: int, threshold: float, n_frames: int) -> list[Detection]:
        out: list[Detection] = []
        run_start, run_lag, last = -1, 0, -10

        def close() -> None:
            if run_start >= 0:
                start, end = run_start, last + self.m - 1
                if self.min_frames <= end - start + 1 <= run_lag:
                    out.append(Detection((start - run_lag) / FPS, _end_s(end - run_lag), start / FPS, _end_s(end), 1.0, _end_s(min(n_frames - 1, last + self.m + 5))))

        for k, (d, j) in enumerate(zip(dist, nn, strict=True)):
            i = first + k
            lag = i - int(j)
            if np.isfinite(d) and d <= threshold and lag >= self.min_lag:
                if run_start >= 0 and abs(lag - run_lag) <= 2 and i - last <= 5:
                    last, run_lag = i, lag
                    continue
                close()
                run_start, run_lag, last = i, lag, i
            elif run_start >= 0 and i - last > 5:
                close()
                run_start = -1
        close()
        return _dedupe(out)
