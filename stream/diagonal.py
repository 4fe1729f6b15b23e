"""Following a repeat along a near-diagonal of the self-similarity matrix (sans-IO).

A repeat of earlier audio at lag ``L`` frames shows up as high cosine similarity between
frame ``t`` and frame ``t - L`` for every ``t`` of the repeat: a diagonal line. A tempo
change of the repeat bends the line slowly (±5 % tempo moves the lag by one frame every
20 frames), so a :class:`DiagonalTrack` re-picks the lag among ``L-1, L, L+1`` every few
frames within a drift budget of ``tempo_tolerance × elapsed + 2`` frames.

Scores are *contrasts*: the mean similarity on the diagonal against the median similarity
on parallel diagonals a few hundred milliseconds away over the same frames. Stationary
sound (hum, steady noise, sustained tones) is as similar off the diagonal as on it and so
scores ~0 however similar its frames are; a real repeat scores near 1 when exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from ostinato.stream.frame_ring import FrameRing

__all__ = ["DiagonalTrack", "TrackParams", "background_similarity", "verify_alignment"]


@dataclasses.dataclass(frozen=True, slots=True)
class TrackParams:
    """Frame-level tracking parameters (derived from ``MatcherConfig``).

    Args:
        patience_frames: Consecutive active non-matching frames that end a track.
        max_gap_frames: Consecutive inactive frames that end a track.
        max_length_frames: A track longer than this is ended (and may restart).
        tempo_tolerance: Allowed relative tempo difference (0.05 = ±5 %).
        hit_fraction: Hit threshold as a fraction of the way from background to the
            starting diagonal similarity.
        background_offsets: Lag offsets (frames) of the parallel diagonals.
    """

    patience_frames: int
    max_gap_frames: int
    max_length_frames: int
    tempo_tolerance: float
    hit_fraction: float
    background_offsets: tuple[int, ...]


def _dots(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.einsum("ij,ij->i", a, b)


def background_similarity(
    ring: FrameRing, ts: npt.NDArray[np.int64], lags: npt.NDArray[np.int64], offsets: tuple[int, ...]
) -> float:
    """Median over ``offsets`` of the mean similarity of frames ``ts`` with ``ts - lags - off``."""
    x, ok_x = ring.take(ts)
    means = []
    for off in offsets:
        y, ok_y = ring.take(ts - lags - off)
        ok = ok_x & ok_y
        if ok.sum() >= max(3, len(ts) // 4):
            means.append(float(_dots(x[ok], y[ok]).mean()))
    return float(np.median(means)) if means else 0.0


def verify_alignment(
    ring: FrameRing, start: int, stop: int, lag: int, search_frames: int
) -> tuple[int, float, npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Best lag within ``lag ± search_frames`` for frames ``start … stop-1``.

    Returns:
        ``(best_lag, mean_similarity, per-frame similarities at best_lag, valid mask)``.
    """
    x, ok_x = ring.span(start, stop)
    lo, hi = start - lag - search_frames, stop - lag + search_frames
    y, ok_y = ring.span(lo, hi)
    sims = x @ y.T  # [n, m]: frame start+i vs lo+j; lag of (i, j) = start + i - lo - j
    n = stop - start
    best = (lag, -np.inf, np.zeros(n, np.float32), np.zeros(n, bool))
    rows = np.arange(n)
    for delta in range(-search_frames, search_frames + 1):
        cols = rows + search_frames - delta
        ok = ok_x & ok_y[cols]
        if ok.sum() < max(3, n // 3):
            continue
        diag = sims[rows, cols]
        mean = float(diag[ok].mean())
        if mean > best[1]:
            best = (lag + delta, mean, diag.astype(np.float32), ok)
    return best


class DiagonalTrack:
    """One repeat being followed frame by frame.

    Args:
        start: First frame of the repeat found so far.
        cursor: Next frame to examine.
        lag: Current lag in frames.
        threshold: Per-frame hit threshold (cosine).
        background: Background similarity measured when the track started.
        params: Tracking parameters.
    """

    def __init__(
        self, start: int, cursor: int, lag: int, threshold: float, background: float, params: TrackParams
    ) -> None:
        self.start = start
        self.cursor = cursor
        self.lag = lag
        self.initial_lag = lag
        self.threshold = threshold
        self.background = background
        self.params = params
        self.last_hit = start
        self.ended = False
        self.periodic = False
        self._ts: list[int] = []
        self._lags: list[int] = []
        self._sims: list[float] = []
        self._recent: list[float] = []
        self._miss_run = 0
        self._gap_run = 0
        self._neighbour = np.zeros(3, dtype=np.float64)

    def seed(self, ts: npt.NDArray[np.int64], lags: npt.NDArray[np.int64], sims: npt.NDArray[np.float32]) -> None:
        """Record frames already known to belong to the repeat (from the start search)."""
        for t, lag, s in zip(ts.tolist(), lags.tolist(), sims.tolist(), strict=True):
            self._record(int(t), int(lag), float(s))

    def _record(self, t: int, lag: int, sim: float) -> None:
        self._ts.append(t)
        self._lags.append(lag)
        self._sims.append(sim)
        if sim >= self.threshold:
            self.last_hit = max(self.last_hit, t)

    def advance(self, ring: FrameRing, stop: int) -> None:
        """Examine frames ``cursor … stop-1`` (call after they were written to ``ring``)."""
        step = 10
        while self.cursor < stop and not self.ended:
            t0 = self.cursor
            t1 = min(stop, t0 + step)
            self._advance_block(ring, t0, t1)
            self.cursor = t1

    def _advance_block(self, ring: FrameRing, t0: int, t1: int) -> None:
        x, ok_x = ring.span(t0, t1)
        y, ok_y = ring.span(t0 - self.lag - 1, t1 - self.lag + 1)
        sims = x @ y.T
        rows = np.arange(t1 - t0)
        by_delta = {d: sims[rows, rows + 1 - d] for d in (-1, 0, 1)}
        ok = ok_x & ok_y[rows + 1]
        p = self.params
        for i in range(t1 - t0):
            t = t0 + i
            if not ok[i]:
                self._gap_run += 1
                if self._gap_run > p.max_gap_frames:
                    self.ended = True
                    return
                continue
            self._gap_run = 0
            s = float(by_delta[0][i])
            self._record(t, self.lag, s)
            self._recent = [*self._recent[-4:], s]
            if sum(self._recent) / len(self._recent) >= self.threshold:
                self._miss_run = 0
            else:
                self._miss_run += 1
                if self._miss_run >= p.patience_frames:
                    self.ended = True
                    return
            if t - self.start >= p.max_length_frames:
                self.ended = True
                return
        if ok.any():
            means = np.array([by_delta[d][ok].mean() for d in (-1, 0, 1)])
            self._neighbour = 0.5 * self._neighbour + 0.5 * means
            self._maybe_shift_lag(t1)

    def _maybe_shift_lag(self, t: int) -> None:
        best = int(np.argmax(self._neighbour)) - 1
        if best == 0 or self._neighbour[best + 1] < self._neighbour[1] + 0.01:
            return
        budget = self.params.tempo_tolerance * (t - self.start) + 2
        if abs(self.lag + best - self.initial_lag) <= budget:
            self.lag += best
            self._neighbour = np.roll(self._neighbour, -best)

    def trim(self, window_frames: int = 11, min_density: float = 0.5) -> None:
        """Reset ``start``/``last_hit`` to the longest run where at least ``min_density`` of
        the surrounding ``window_frames`` recorded frames are hits (drops chance patches
        joined to the repeat by short gaps)."""
        if not self._ts:
            return
        order = np.argsort(np.asarray(self._ts), kind="stable")
        ts = np.asarray(self._ts, dtype=np.int64)[order]
        hits = (np.asarray(self._sims, dtype=np.float32)[order] >= self.threshold).astype(np.float32)
        kernel = np.ones(window_frames, np.float32) / window_frames
        density = np.convolve(np.pad(hits, window_frames // 2, mode="edge"), kernel, mode="valid")
        good = (density >= min_density) & (hits > 0)
        best_len, best = 0, (self.start, self.start - 1)
        run_start = None
        dense = density >= min_density
        for i in range(len(ts) + 1):
            if i < len(ts) and dense[i]:
                run_start = i if run_start is None else run_start
                continue
            if run_start is not None:
                idx = np.nonzero(good[run_start:i])[0]
                if idx.size and ts[run_start + idx[-1]] - ts[run_start + idx[0]] + 1 > best_len:
                    best = (int(ts[run_start + idx[0]]), int(ts[run_start + idx[-1]]))
                    best_len = best[1] - best[0] + 1
                run_start = None
        self.start, self.last_hit = best

    def path(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Frames, lags and similarities recorded up to the last hit."""
        ts = np.asarray(self._ts, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        keep = order[(ts[order] >= self.start) & (ts[order] <= self.last_hit)]
        return ts[keep], np.asarray(self._lags, dtype=np.int64)[keep], np.asarray(self._sims, np.float32)[keep]

    @property
    def length_frames(self) -> int:
        """Frames from the start to the last hit."""
        return self.last_hit - self.start + 1

    def lag_at_end(self) -> int:
        """Lag at the last hit."""
        ts, lags, _ = self.path()
        return int(lags[-1]) if lags.size else self.lag

    def lag_at_start(self) -> int:
        """Lag at the first recorded frame."""
        ts, lags, _ = self.path()
        return int(lags[0]) if lags.size else self.initial_lag

    def score(self, ring: FrameRing) -> float:
        """Calibrated contrast in [0, 1] of the path against parallel diagonals."""
        ts, lags, sims = self.path()
        if ts.size == 0:
            return 0.0
        diag = float(sims.mean())
        bg = background_similarity(ring, ts, lags, self.params.background_offsets)
        bg = min(bg, 0.99)
        contrast = float(np.clip((diag - bg) / (1.0 - bg), 0.0, 1.0))
        consistency = float((sims >= self.threshold).mean())
        return contrast * consistency
