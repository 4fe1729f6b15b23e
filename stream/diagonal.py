"""Following a repeat along a near-diagonal of the self-similarity matrix (sans-IO).

A repeat of earlier audio at lag ``L`` frames shows up as high cosine similarity between
frame ``t`` and frame ``t - L`` for every ``t`` of the repeat: a diagonal line. A tempo
change of the repeat bends the line slowly (±5 % tempo moves the lag by one frame every
20 frames), so a :class:`DiagonalTrack` re-picks the lag among ``L-1, L, L+1`` every few
frames within a drift budget of ``tempo_tolerance × elapsed + 2`` frames.

A frame counts as matching while the mean similarity of the last few frames on the
diagonal stays above ``threshold`` (set from the stream's background similarity). The
evidence for a finished track is a *contrast*: the mean similarity on the diagonal against
the median similarity on parallel diagonals a few hundred milliseconds away over the same
frames (:meth:`DiagonalTrack.evidence`). Stationary sound (hum, steady noise, sustained
tones) is as similar off the diagonal as on it and so has no contrast however similar its
frames are.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import numpy.typing as npt

from ostinato.stream.frame_ring import FrameRing

__all__ = ["DiagonalTrack", "TrackParams", "background_similarity", "verify_alignment"]

_LAG_REACH = 3  # lags examined on each side of the current one while following a track
_SERIALS = itertools.count()  # track identities (id() of a collected track is reused)


@dataclasses.dataclass(frozen=True, slots=True)
class TrackParams:
    """Frame-level tracking parameters (derived from ``MatcherConfig``).

    Args:
        patience_frames: Consecutive active non-matching frames that end a track.
        max_gap_frames: Consecutive inactive frames that end a track.
        max_length_frames: A track longer than this is ended (and may restart).
        tempo_tolerance: Allowed relative tempo difference (0.05 = ±5 %).
        smooth_frames: Frames averaged for the hit decision.
        hit_fraction: The hit threshold rises to this fraction of the way from background to
            the strongest smoothed similarity of the track.
        background_offsets: Lag offsets (frames) of the parallel diagonals.
    """

    patience_frames: int
    max_gap_frames: int
    max_length_frames: int
    tempo_tolerance: float
    smooth_frames: int
    hit_fraction: float
    background_offsets: tuple[int, ...]


def _dots(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    dots: npt.NDArray[np.float32] = np.einsum("ij,ij->i", a, b)
    return dots


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
    ring: FrameRing, start: int, stop: int, lag: int, search_frames: int, offsets: tuple[int, ...]
) -> tuple[int, float, float, npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Best lag within ``lag ± search_frames`` for frames ``start … stop-1``, and the
    background at that lag, from one matrix product.

    Returns:
        ``(best_lag, mean similarity at best_lag, background (median over ``offsets`` of the
        mean similarity at best_lag + offset), per-frame similarities, valid mask)``;
        the mean is ``-inf`` when too few frames are held and active.
    """
    n = stop - start
    reach = search_frames + max((abs(o) for o in offsets), default=0)
    x, ok_x = ring.span(start, stop)
    y, ok_y = ring.span(start - lag - reach, stop - lag + reach)
    # Only the needed diagonals, by gather + einsum: a full ``x @ y.T`` would hand a small
    # product to multithreaded BLAS, which is ~20x slower on a busy machine.
    rows = np.arange(n)
    deltas = np.arange(-search_frames, search_frames + 1)
    cols = rows[None, :] + reach - deltas[:, None]  # frame start+i vs lag+delta
    diags = np.einsum("ij,dij->di", x, y[cols])
    ok = ok_x[None, :] & ok_y[cols]
    counts = ok.sum(axis=1)
    means = np.where(counts >= max(3, n // 3), (diags * ok).sum(axis=1) / np.maximum(counts, 1), -np.inf)
    best = int(np.argmax(means))
    if not np.isfinite(means[best]):
        return lag, float("-inf"), 0.0, np.zeros(n, np.float32), np.zeros(n, bool)
    offs = deltas[best] + np.asarray(offsets, dtype=np.int64)
    bcols = rows[None, :] + reach - offs[:, None]
    bok = ok[best][None, :] & ok_y[bcols]
    bcounts = bok.sum(axis=1)
    bmeans = (np.einsum("ij,dij->di", x, y[bcols]) * bok).sum(axis=1) / np.maximum(bcounts, 1)
    valid = bcounts >= max(3, n // 4)
    bg = float(np.median(bmeans[valid])) if valid.any() else 0.0
    return lag + int(deltas[best]), float(means[best]), bg, diags[best].astype(np.float32), ok[best]


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
        self.level = threshold  # highest smoothed similarity seen: the hit threshold follows it
        self.last_hit = start
        self.ended = False
        self.periodic = False
        self.serial = next(_SERIALS)
        self._ts: list[int] = []
        self._lags: list[int] = []
        self._sims: list[float] = []
        self._recent: list[float] = []
        self._miss_run = 0
        self._gap_run = 0
        self._neighbour = np.zeros(2 * _LAG_REACH + 1, dtype=np.float64)

    def seed(self, ts: npt.NDArray[np.int64], lags: npt.NDArray[np.int64], sims: npt.NDArray[np.float32]) -> None:
        """Record frames already known to belong to the repeat (from the start search)."""
        for t, lag, s in zip(ts.tolist(), lags.tolist(), sims.tolist(), strict=True):
            self._record(int(t), int(lag), float(s))
        w = self.params.smooth_frames
        if sims.size >= w:
            smooth = np.convolve(np.asarray(sims, np.float64), np.ones(w) / w, mode="valid")
            self.level = max(self.level, float(smooth.max()))

    def _record(self, t: int, lag: int, sim: float) -> None:
        self._ts.append(t)
        self._lags.append(lag)
        self._sims.append(sim)

    def advance(self, ring: FrameRing, stop: int) -> None:
        """Examine frames ``cursor … stop-1`` (call after they were written to ``ring``)."""
        step = 10
        while self.cursor < stop and not self.ended:
            t0 = self.cursor
            t1 = min(stop, t0 + step)
            self._advance_block(ring, t0, t1)
            self.cursor = t1

    def _advance_block(self, ring: FrameRing, t0: int, t1: int) -> None:
        r = _LAG_REACH
        x, ok_x = ring.span(t0, t1)
        y, ok_y = ring.span(t0 - self.lag - r, t1 - self.lag + r)
        rows = np.arange(t1 - t0)
        by_delta = {d: np.einsum("ij,ij->i", x, y[rows + r - d]) for d in range(-r, r + 1)}
        ok = ok_x & ok_y[rows + r]
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
            self._recent = [*self._recent[1 - p.smooth_frames :], s]
            smooth = sum(self._recent) / len(self._recent)
            if len(self._recent) == p.smooth_frames:
                self.level = max(self.level, smooth)
            if smooth >= self.effective_threshold:
                self._miss_run = 0
                self.last_hit = t
            else:
                self._miss_run += 1
                if self._miss_run >= p.patience_frames:
                    self.ended = True
                    return
            if t - self.start >= p.max_length_frames:
                self.ended = True
                return
        if ok.any():
            means = np.array([by_delta[d][ok].mean() for d in range(-r, r + 1)])
            self._neighbour = 0.5 * self._neighbour + 0.5 * means
            self._maybe_shift_lag(t1)

    def _maybe_shift_lag(self, t: int) -> None:
        # Time-stretched audio (WSOLA and the like) moves the best lag in small jumps, not
        # smoothly: follow the best nearby diagonal when it is clearly better.
        r = _LAG_REACH
        budget = self.params.tempo_tolerance * (t - self.start) + 2
        order = np.argsort(-self._neighbour)
        for idx in order:
            best = int(idx) - r
            if best == 0 or self._neighbour[idx] < self._neighbour[r] + 0.02:
                return
            if abs(self.lag + best - self.initial_lag) <= budget:
                self.lag += best
                self._neighbour = np.zeros(2 * r + 1)
                return

    @property
    def effective_threshold(self) -> float:
        """Hit threshold: the start threshold, raised to ``hit_fraction`` of the way from the
        background to the strongest stretch seen (a strong repeat ends where it weakens)."""
        return max(self.threshold, self.background + self.params.hit_fraction * (self.level - self.background))

    def trim(self, max_gap_frames: int) -> None:
        """Reset ``start``/``last_hit`` to the longest stretch where the centred moving
        average of the similarity stays above the threshold, allowing dips of at most
        ``max_gap_frames`` recorded frames (a changed word between two shared ones ends it)."""
        if not self._ts:
            return
        order = np.argsort(np.asarray(self._ts), kind="stable")
        ts = np.asarray(self._ts, dtype=np.int64)[order]
        sims = np.asarray(self._sims, dtype=np.float32)[order]
        w = self.params.smooth_frames | 1
        smooth = np.convolve(np.pad(sims, w // 2, mode="edge"), np.ones(w, np.float32) / w, mode="valid")
        hits = np.nonzero(smooth >= self.effective_threshold)[0]
        if hits.size == 0:
            self.last_hit = self.start - 1
            return
        breaks = np.nonzero(np.diff(hits) > max_gap_frames + 1)[0]
        firsts = np.concatenate([[0], breaks + 1])
        lasts = np.concatenate([breaks, [hits.size - 1]])
        lengths = ts[hits[lasts]] - ts[hits[firsts]]
        best = int(np.argmax(lengths))
        lo, hi = hits[firsts[best]], hits[lasts[best]]
        # Boundaries: where the run is at least half as strong as its strongest stretch.
        strong = np.nonzero(smooth[lo : hi + 1] >= self.background + 0.5 * (self.level - self.background))[0]
        if strong.size:
            lo, hi = lo + strong[0], lo + strong[-1]
        self.start, self.last_hit = int(ts[lo]), int(ts[hi])

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

    def evidence(self, ring: FrameRing) -> tuple[float, float, int]:
        """``(diagonal mean, parallel-diagonal background, frames)`` of the trimmed path."""
        ts, lags, sims = self.path()
        if ts.size == 0:
            return 0.0, 0.0, 0
        bg = background_similarity(ring, ts, lags, self.params.background_offsets)
        return float(sims.mean()), bg, int(ts.size)
