"""Live recurring-pattern matcher: flags audio that repeats something heard earlier (sans-IO).

``PatternMatcher.push(block) -> list[Event]`` takes consecutive frame features of one stream
(log-mel or Wav2Vec2 hidden states, 320-sample frames) and returns :class:`MatchEvent` s when
a stretch of audio repeats an earlier one still in the buffer, and optional
:class:`NoveltyEvent` s. ``flush()`` ends the stream. The algorithm, parameters, silence gate
and the music-repetition policy are described in ``docs/matcher.md``; in short:

1. frames are normalised (:mod:`~ostinato.stream.frame_norm`) and gated by energy, then
   written to a fixed-size ring (:mod:`~ostinato.stream.frame_ring`);
2. every ``segment_hop_s`` the last ``segment_s`` of audio is embedded and searched against
   earlier segments (:mod:`~ostinato.stream.segment_index`) — candidates with their lag;
3. a candidate whose frame-level alignment contrasts with its surroundings starts a
   :class:`~ostinato.stream.diagonal.DiagonalTrack`, extended backwards to the repeat's
   start and followed forwards frame by frame (tolerating ±5 % tempo) until it stops matching;
4. a finished track long enough, scoring above ``match_threshold`` and not part of a
   periodic run (loops, grooves) becomes a match event; repeats of a pattern keep its id.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import logging

import numpy as np
import numpy.typing as npt

from ostinato.stream.diagonal import DiagonalTrack, TrackParams, verify_alignment
from ostinato.stream.errors import ErrorClass, StreamError
from ostinato.stream.events import Event, MatchEvent, NoveltyEvent
from ostinato.stream.frame_norm import FrameNormalizer
from ostinato.stream.frame_ring import FrameRing
from ostinato.stream.matcher_config import FeatureBlock, MatcherConfig, MatcherStats
from ostinato.stream.matcher_runs import NoveltyRun, PeriodicRegions, within_loop
from ostinato.stream.segment_index import SegmentIndex
from ostinato.stream.verify import floor_difference, loud_mismatch, pair_accepted, pair_evidence, short_pair_accepted

__all__ = ["FeatureBlock", "MatcherConfig", "MatcherInputError", "MatcherStats", "PatternMatcher"]

logger = logging.getLogger(__name__)


class MatcherInputError(StreamError, ValueError):
    """A feature block the matcher cannot use (wrong shape, dimension or position)."""

    error_class = ErrorClass.INPUT
    default_hint = "push consecutive [T, H] float frames of one stream with a constant H"


@dataclasses.dataclass(slots=True)
class _Pattern:
    pattern_id: str
    first: tuple[int, int]
    last_event_end: int = -(10**12)
    count: int = 1


class PatternMatcher:
    """Per-stream online recurring-pattern detector.

    Args:
        config: Matcher settings.
        stream: Stream identifier written into events.
        input_dim: Feature dimension (taken from the first block when None).
    """

    def __init__(self, config: MatcherConfig | None = None, stream: str = "", input_dim: int | None = None) -> None:
        self.config = config if config is not None else MatcherConfig()
        self.stream = stream
        self.stats = MatcherStats()
        self._input_dim = input_dim
        self._norm: FrameNormalizer | None = None
        self._two_views = False  # segment embeddings per view (SegmentIndex)
        self._ring: FrameRing | None = None
        self._raw: FrameRing | None = None  # raw frames for the second-stage verification
        self._index: SegmentIndex | None = None
        c = self.config
        self._gate = c.activity_gate()
        self._tracks: list[DiagonalTrack] = []
        self._held: list[tuple[int, DiagonalTrack]] = []  # (release frame, back-to-back track)
        self._occurrences: list[tuple[int, int, str]] = []  # (start, end, pattern_id) sorted by start
        self._emitted: collections.deque[tuple[int, int, int]] = collections.deque(maxlen=256)  # (start, end, lag at end)
        self._loop_slack = c.frames(0.5)  # tolerance of where a loop began (within_loop)
        self._periodic = PeriodicRegions(slack=self._loop_slack)
        self._patterns: collections.OrderedDict[str, _Pattern] = collections.OrderedDict()
        self._novelty = NoveltyRun(c)
        self._next_pattern = 0
        self._rng = np.random.default_rng(0)
        self._bg_mean = 0.0
        self._bg_sq = 0.0
        self._bg_weight = 0.0
        self._last_best: float | None = None
        self._query_lags: collections.deque[tuple[int, npt.NDArray[np.int64]]] = collections.deque(
            maxlen=max(8, int(c.max_pattern_s / c.segment_hop_s) + 8)
        )
        self._params = TrackParams(
            patience_frames=c.frames(c.end_patience_s),
            max_gap_frames=c.frames(c.max_gap_s),
            max_length_frames=c.frames(c.max_pattern_s),
            tempo_tolerance=c.tempo_tolerance,
            smooth_frames=c.frames(c.smooth_s),
            hit_fraction=c.hit_fraction,
            background_offsets=tuple(c.frames(o) * s for o in c.background_offsets_s for s in (-1, 1)),
        )
        # Lags within this many frames count as one repeat (3 + one second of drift at the tempo tolerance).
        self._lag_tol = 3 + int(c.tempo_tolerance * 50)
        if input_dim is not None:
            self._allocate(input_dim)

    # ------------------------------------------------------------------ state
    def _allocate(self, input_dim: int) -> None:
        c = self.config
        self._input_dim = input_dim
        self._norm = c.frame_normalizer(input_dim)
        self._two_views = self._norm.has_fast_view
        self._ring = FrameRing(c.frames(c.buffer_s), self._norm.dim)
        if c.verify_min_evidence is not None:
            self._raw = FrameRing(self._ring.capacity, input_dim)
        hop = c.frames(c.segment_hop_s)
        self._index = SegmentIndex(
            -(-self._ring.capacity // hop), self._norm.dim * c.segment_parts, self._two_views, c.segment_slow_weight
        )

    @property
    def frame_dim(self) -> int | None:
        """Dimension of normalised frames (None before the first block)."""
        return self._norm.dim if self._norm is not None else None

    @property
    def frames_seen(self) -> int:
        """Frames pushed so far (including filled gaps)."""
        return self._ring.end if self._ring is not None else 0

    @property
    def nbytes(self) -> int:
        """Upper bound of the memory held by this matcher's buffers, in bytes.

        The ring and the segment index are allocated once; tracks are capped at
        ``max_tracks`` of at most ``max_pattern_s`` each.
        """
        if self._ring is None or self._index is None:
            return 0
        c = self.config
        tracks = c.max_tracks * c.frames(c.max_pattern_s) * 3 * 8
        raw = self._raw.nbytes if self._raw is not None else 0
        return self._ring.nbytes + raw + self._index.nbytes + tracks

    def _seconds(self, frame: int) -> float:
        return frame * self.config.frame_stride_samples / self.config.sample_rate

    def _end_seconds(self, last_frame: int) -> float:
        c = self.config
        return (last_frame * c.frame_stride_samples + c.frame_length_samples) / c.sample_rate

    # ------------------------------------------------------------------ input
    def push(self, block: FeatureBlock) -> list[Event]:
        """Add consecutive frames of the stream; return the events they complete.

        Frames missing between the previous block and ``block.start_frame`` (dropped by an
        overloaded pipeline) are filled as inactive.

        Raises:
            MatcherInputError: Wrong shape or dimension, NaN/Inf, or a block that starts
                before frames already pushed.
        """
        frames = np.asarray(block.frames, dtype=np.float32)
        if frames.ndim != 2:
            raise MatcherInputError(f"frames has shape {frames.shape}; expected [T, H]")
        if self._input_dim is None:
            self._allocate(int(frames.shape[1]))
        if frames.shape[1] != self._input_dim:
            raise MatcherInputError(f"frames have dim {frames.shape[1]}; this stream started with {self._input_dim}")
        if frames.size and not np.isfinite(frames).all():
            raise MatcherInputError("frames hold NaN/Inf values")
        assert self._ring is not None
        energy = block.energy_array(frames.shape[0])
        start = self._ring.end if block.start_frame is None else block.start_frame
        if start < self._ring.end:
            raise MatcherInputError(f"block starts at frame {start}; frames up to {self._ring.end - 1} were already pushed")
        events: list[Event] = []
        if start > self._ring.end:
            events += self._fill_gap(start - self._ring.end)
        events += self._consume(frames, energy)
        return events

    def _fill_gap(self, count: int) -> list[Event]:
        assert self._input_dim is not None
        self.stats.gap_frames += count
        if count > self.config.frames(self.config.buffer_s):
            self._tracks.clear()
        zeros = np.zeros((count, self._input_dim), np.float32)
        return self._consume(zeros, np.full(count, -200.0, np.float32))

    def _consume(self, frames: npt.NDArray[np.float32], energy: npt.NDArray[np.float32]) -> list[Event]:
        assert self._ring is not None
        hop = self.config.frames(self.config.segment_hop_s)
        events: list[Event] = []
        i = 0
        while i < frames.shape[0]:
            n = min(frames.shape[0] - i, hop - self._ring.end % hop)
            self._write(frames[i : i + n], energy[i : i + n])
            i += n
            if self._ring.end % hop == 0:
                self._on_segment()
                events += self._novelty_step(flush=False)
            events += self._finish_tracks(force=False)
        return events

    def _write(self, frames: npt.NDArray[np.float32], energy: npt.NDArray[np.float32]) -> None:
        assert self._norm is not None and self._ring is not None
        active = self._gate.update(energy)
        unit = self._norm.normalize(frames, active)
        self._ring.write(unit, active)
        if self._raw is not None:
            self._raw.write(frames, active)
        self.stats.frames += int(frames.shape[0])
        self.stats.active_frames += int(active.sum())
        for track in self._tracks:
            track.advance(self._ring, self._ring.end)
            if not track.periodic and track.length_frames > self.config.periodic_ratio * max(track.lag, 1):
                track.periodic = True
                self.stats.periodic_tracks += 1
                self._periodic.mark(track)

    def flush(self) -> list[Event]:
        """End of stream: finish every open track and novelty run; return their events."""
        if self._ring is None:
            return []
        events = self._finish_tracks(force=True)
        events += self._novelty_step(flush=True)
        return events

    def reset(self) -> None:
        """Forget the stream (buffers are kept allocated)."""
        self.__init__(self.config, self.stream, self._input_dim)  # type: ignore[misc]

    # ------------------------------------------------------------------ search
    def _segment_embedding(self, start: int) -> tuple[npt.NDArray[np.float32], float, bool]:
        """Embedding of the segment starting at ``start``: means of ``segment_parts``
        sub-blocks of its active unit frames, L2-normalised — per view with two views
        (``[slow parts | fast parts]``, each half normalised; ``SegmentIndex``).

        Returns:
            ``(embedding, active fraction, whether the fast view had settled on all its
            active frames)``.
        """
        assert self._ring is not None
        c = self.config
        x, ok = self._ring.span(start, start + c.frames(c.segment_s))
        parts = np.array_split(np.arange(x.shape[0]), c.segment_parts)
        pooled = np.stack([x[p][ok[p]].sum(axis=0) if ok[p].any() else np.zeros(x.shape[1], np.float32) for p in parts])
        if not self._two_views:
            return _unit(pooled.ravel()), float(ok.mean()), False
        # Noise that starts with a repeat shifts every noisy frame's slow view one way, so
        # noisy segments resemble each other more than the repeat's earlier occurrence; the
        # fast view has already forgotten it (docs/matcher.md, item 10).
        half = x.shape[1] // 2
        settled = bool(ok.any()) and bool(np.all(np.any(x[ok, half:] != 0, axis=1)))
        emb = np.concatenate([_unit(pooled[:, :half].ravel()), _unit(pooled[:, half:].ravel())])
        return emb, float(ok.mean()), settled

    def _on_segment(self) -> None:
        assert self._ring is not None and self._index is not None
        c = self.config
        seg = c.frames(c.segment_s)
        q0 = self._ring.end - seg
        if q0 < self._ring.start:
            return
        self._sample_background()
        emb, active_fraction, settled = self._segment_embedding(q0)
        if active_fraction < c.min_active_fraction:
            self._last_best = None
            return
        max_start = q0 - max(seg, c.frames(c.min_lag_s))
        starts, sims = self._index.search(emb, self._ring.start, max_start, c.candidates, settled)
        self._last_best = float(sims[0]) if sims.size else None
        self.stats.segments += 1
        self._query_lags.append((q0, q0 - starts))
        for cand, sim in zip(starts.tolist(), sims.tolist(), strict=True):
            if sim < c.candidate_threshold:
                break
            self._try_candidate(q0, q0 - int(cand))
        self._index.add(q0, emb, settled)

    def _sample_background(self, pairs: int = 32) -> None:
        """Update the running mean/variance of similarity between unrelated frames."""
        assert self._ring is not None
        lo, hi = self._ring.start, self._ring.end
        if hi - lo < 2 * self.config.frames(self.config.segment_s):
            return
        a = self._rng.integers(lo, hi, pairs)
        b = self._rng.integers(lo, hi, pairs)
        far = np.abs(a - b) >= self.config.frames(self.config.segment_s)
        x, ok_x = self._ring.take(a[far])
        y, ok_y = self._ring.take(b[far])
        ok = ok_x & ok_y
        if ok.sum() < 4:
            return
        sims = np.einsum("ij,ij->i", x[ok], y[ok]).astype(np.float64)
        decay = 0.98 ** int(ok.sum() / 8)
        self._bg_mean = decay * self._bg_mean + (1 - decay) * float(sims.mean())
        self._bg_sq = decay * self._bg_sq + (1 - decay) * float((sims**2).mean())
        self._bg_weight = decay * self._bg_weight + (1 - decay)

    def background(self) -> tuple[float, float]:
        """Mean and standard deviation of the similarity of unrelated frames of this stream
        (``(0, 0.3)`` until measured)."""
        if self._bg_weight < 0.2:
            return 0.0, 0.3
        mean = self._bg_mean / self._bg_weight
        var = max(self._bg_sq / self._bg_weight - mean**2, 1e-4)
        return mean, max(float(np.sqrt(var)), 0.05)

    def _evidence(self, diag: float, bg: float, frames: int) -> float:
        """z-like evidence that a diagonal of ``frames`` frames is a repeat."""
        _, std = self.background()
        return (diag - bg) / std * float(np.sqrt(frames / 4.0))

    def _covered(self, q0: int, lag: int) -> bool:
        tol = self._lag_tol
        for track in self._tracks:
            if abs(track.lag - lag) <= tol:
                return True
            if track.periodic and track.lag > 0 and within_loop(q0 - lag, track.start, track.lag, self._loop_slack):
                ratio = lag / track.lag
                if round(ratio) >= 1 and abs(lag - round(ratio) * track.lag) <= tol:
                    return True
        return False

    def _try_candidate(self, q0: int, lag: int) -> None:
        assert self._ring is not None
        c = self.config
        if self._covered(q0, lag):
            return
        if len(self._tracks) >= c.max_tracks:
            self.stats.dropped_candidates += 1
            return
        self.stats.candidates += 1
        seg = c.frames(c.segment_s)
        search = c.frames(c.segment_hop_s) // 2 + 2
        lag, diag, bg, sims, ok = verify_alignment(self._ring, q0, q0 + seg, lag, search, self._params.background_offsets)
        if not np.isfinite(diag) or self._covered(q0, lag):
            return
        ts = np.arange(q0, q0 + seg, dtype=np.int64)
        if self._evidence(diag, bg, int(ok.sum())) < c.start_z:
            return
        mean, std = self.background()
        threshold = mean + c.hit_z * std
        track = DiagonalTrack(q0, self._ring.end, lag, threshold, bg, self._params)
        track.level = max(track.level, diag)
        back_ts, back_sims = self._extend_back(q0, lag, threshold)
        track.seed(back_ts, np.full(back_ts.size, lag, np.int64), back_sims)
        track.seed(ts[ok], np.full(int(ok.sum()), lag, np.int64), sims[ok])
        track.start = int(back_ts[0]) if back_ts.size else q0
        track.last_hit = q0 + seg - 1
        track.advance(self._ring, self._ring.end)
        self._tracks.append(track)
        self.stats.tracks += 1

    def _extend_back(self, q0: int, lag: int, threshold: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Walk the diagonal backwards from ``q0`` to find where the repeat began."""
        assert self._ring is not None
        c = self.config
        lo = max(self._ring.start + lag, q0 - c.frames(c.max_extend_back_s))
        if lo >= q0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        ts = np.arange(q0 - 1, lo - 1, -1, dtype=np.int64)
        x, ok_x = self._ring.take(ts)
        y, ok_y = self._ring.take(ts - lag)
        ok = ok_x & ok_y
        sims = np.einsum("ij,ij->i", x, y)
        keep_ts: list[int] = []
        keep_sims: list[float] = []
        recent: list[float] = []
        first_hit = None
        miss = gap = 0
        for t, s, good in zip(ts.tolist(), sims.tolist(), ok.tolist(), strict=True):
            if not good:
                gap += 1
                if gap > self._params.max_gap_frames:
                    break
                continue
            gap = 0
            keep_ts.append(t)
            keep_sims.append(s)
            recent = [*recent[1 - self._params.smooth_frames :], s]
            if sum(recent) / len(recent) >= threshold:
                miss = 0
                first_hit = t
            else:
                miss += 1
                if miss >= self._params.patience_frames:
                    break
        if first_hit is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        n = keep_ts.index(first_hit) + 1
        return np.asarray(keep_ts[:n][::-1], np.int64), np.asarray(keep_sims[:n][::-1], np.float32)

    # ------------------------------------------------------------------ output
    def _finish_tracks(self, force: bool) -> list[Event]:
        assert self._ring is not None
        self._periodic.update(self._tracks)
        done = [t for t in self._tracks if t.ended or force]
        self._tracks = [t for t in self._tracks if not (t.ended or force)]
        done = self._hold_back_to_back(done, force)
        if not done:
            return []
        c = self.config
        shortest = c.min_pattern_s if c.short_noisy_pattern_s is None else c.short_noisy_pattern_s
        min_frames = c.frames(shortest)
        kept = []
        for track in done:
            track.trim(c.frames(c.max_dip_s))
            if track.length_frames < min_frames:
                self.stats.rejected_short += 1  # cheap rejection before scoring
            else:
                kept.append(track)
        scored = sorted(((self._score(t), t) for t in kept), key=lambda st: -st[0])
        events: list[Event] = []
        for score, track in scored:
            if self._accepted(track, score):
                events += self._emit(track, score)
        self._prune()
        return events

    def _hold_back_to_back(self, done: list[DiagonalTrack], force: bool) -> list[DiagonalTrack]:
        """The finished tracks to judge now. A *back-to-back* repeat (its two occurrences touch:
        it is at least as long as its lag, less the lag tolerance) is held until one more lag
        has played: a third repetition makes it a piece of a loop (``docs/matcher.md``,
        *Music's own repetition*), which it cannot know when it ends. Without the hold, a loop
        track that broke off before ``periodic_ratio`` lags was reported just before a second
        track at the same lag turned periodic. A phrase said twice in a row is reported one lag
        later. At most ``max_tracks`` are held (the oldest is released early)."""
        assert self._ring is not None
        now = self._ring.end
        judge_now = []
        for track in done:
            if not force and track.length_frames >= track.lag - self._lag_tol:
                self._held.append((track.last_hit + track.lag + self._params.patience_frames, track))
            else:
                judge_now.append(track)
        self._held.sort(key=lambda held: held[0])
        ready = sum(release <= now for release, _ in self._held)  # a prefix: sorted by release
        later = self._held[ready:]
        early = len(later) if force else max(0, len(later) - self.config.max_tracks)
        due = [track for _, track in self._held[:ready]] + judge_now + [track for _, track in later[:early]]
        self._held = later[early:]
        return due

    def _score(self, track: DiagonalTrack) -> float:
        assert self._ring is not None
        diag, bg, frames = track.evidence(self._ring)
        if frames == 0:
            return 0.0
        bg = max(bg, self._alternative_background(track))
        z = self._evidence(diag, bg, frames)
        c = self.config
        return float(1.0 / (1.0 + np.exp(-(z - c.detection_z) / c.score_scale_z)))

    def _alternative_background(self, track: DiagonalTrack) -> float:
        """Median similarity of the track's frames at the *other* lags the segment search
        proposed while the repeat played (content that looks alike; the ratio test of audio
        fingerprinting). A repeat stands out from them; a chance resemblance does not."""
        assert self._ring is not None
        ts, lags, _ = track.path()
        tol = self._lag_tol
        others: list[int] = []
        for q0, cand in self._query_lags:
            if track.start - 50 <= q0 <= track.last_hit:
                for lag in cand.tolist():
                    if abs(lag - track.lag) > tol and all(abs(lag - o) > tol for o in others):
                        others.append(int(lag))
        if len(others) < 3:
            return -1.0
        x, ok_x = self._ring.take(ts)
        means = []
        drift = lags - track.lag
        for lag in others[:32]:
            y, ok_y = self._ring.take(ts - lag - drift)
            ok = ok_x & ok_y
            if ok.sum() >= max(3, ts.size // 4):
                means.append(float(np.einsum("ij,ij->i", x[ok], y[ok]).mean()))
        return float(np.median(means)) if len(means) >= 3 else -1.0

    def _accepted(self, track: DiagonalTrack, score: float) -> bool:
        """Whether a finished track is a reportable repeat (length, score, music policy,
        verification); counts the rejections."""
        c = self.config
        s, e = track.start, track.last_hit
        short = e - s + 1 < c.frames(c.min_pattern_s)
        if short and (c.short_noisy_pattern_s is None or e - s + 1 < c.frames(c.short_noisy_pattern_s)):
            self.stats.rejected_short += 1
            return False
        if score < c.match_threshold:
            self.stats.rejected_score += 1
            return False
        if track.periodic or self._periodic.covers(s, e, track.lag_at_start()):
            self.stats.rejected_periodic += 1
            return False
        if not (self._short_verified(track) if short else self._verified(track)):
            if short:
                self.stats.rejected_short += 1
            else:
                self.stats.rejected_verify += 1
            return False
        return True

    def _emit(self, track: DiagonalTrack, score: float) -> list[Event]:
        """The match event of an accepted track, unless it mostly overlaps one already
        reported, continues one (same lag, starting within ``refractory_s`` after it: the
        rest of a repeat whose track broke) or its pattern is in its refractory period."""
        assert self._ring is not None
        c = self.config
        s, e = track.start, track.last_hit
        if any(min(e, b) - max(s, a) + 1 > 0.5 * (e - s + 1) for a, b, _ in self._emitted):
            return []
        lag_start, lag_end, refractory = track.lag_at_start(), track.lag_at_end(), c.frames(c.refractory_s)
        if any(a < s <= b + refractory and abs(lag_start - lag_b) <= self._lag_tol for a, b, lag_b in self._emitted):
            self.stats.rejected_refractory += 1
            return []
        pattern = self._pattern_for((s - lag_start, e - lag_end))
        if s < pattern.last_event_end + refractory:
            self.stats.rejected_refractory += 1
            return []
        pattern.last_event_end = e
        pattern.count += 1
        self._register(s, e, pattern.pattern_id)
        self._emitted.append((s, e, lag_end))
        self.stats.matches += 1
        return [MatchEvent(
            stream=self.stream,
            pattern_id=pattern.pattern_id,
            first_start_s=self._seconds(pattern.first[0]),
            first_end_s=self._end_seconds(pattern.first[1]),
            start_s=self._seconds(s),
            end_s=self._end_seconds(e),
            score=round(score, 4),
            detected_at_s=self._end_seconds(self._ring.end - 1),
        )]

    def _verified(self, track: DiagonalTrack) -> bool:
        """Second stage: the pair's contrast and loud mismatches on raw frames (``stream/verify.py``)."""
        c = self.config
        if self._raw is None or c.verify_min_evidence is None:
            return True
        ts, lags, _ = track.path()
        evidence = pair_evidence(self._raw, ts, lags, self._params.background_offsets, c.verify_coefficients, c.verify_margin_db)
        lowest = c.verify_min_evidence if c.verify_aligned_evidence is None else min(c.verify_min_evidence, c.verify_aligned_evidence)
        if not evidence >= lowest:
            return False  # also nan (too few frames held): not verified; skips the mismatch test
        mismatch = loud_mismatch(self._raw, ts, lags, c.verify_margin_db, c.verify_loud_db)
        return pair_accepted(c, evidence, mismatch, ts.size / max(track.length_frames, 1))

    def _short_verified(self, track: DiagonalTrack) -> bool:
        """A track shorter than ``min_pattern_s``: reported only as a pair heard in different
        noise, aligned, with full evidence (``stream/verify.py``)."""
        c = self.config
        if self._raw is None:
            return False
        ts, lags, _ = track.path()
        noise_db = floor_difference(self._raw, ts, lags)
        activity = ts.size / max(track.length_frames, 1)
        if noise_db < c.noisy_floor_db or activity < c.verify_aligned_activity:
            return False  # skips the pair statistics
        evidence = pair_evidence(self._raw, ts, lags, self._params.background_offsets, c.verify_coefficients, c.verify_margin_db)
        mismatch = loud_mismatch(self._raw, ts, lags, c.verify_margin_db, c.verify_loud_db)
        return short_pair_accepted(c, evidence, mismatch, activity, noise_db)

    def _pattern_for(self, span: tuple[int, int]) -> _Pattern:
        a, b = span
        length = max(1, b - a + 1)
        hi = bisect.bisect_right(self._occurrences, (b + 1,))
        for start, end, pid in reversed(self._occurrences[:hi]):
            overlap = min(b, end) - max(a, start) + 1
            if overlap > 0.5 * min(length, end - start + 1) and pid in self._patterns:
                self._patterns.move_to_end(pid)
                return self._patterns[pid]
        pid = self.config.pattern_id_prefix + f"{self.stream + '/' if self.stream else ''}p{self._next_pattern}"
        self._next_pattern += 1
        pattern = _Pattern(pid, span)
        self._patterns[pid] = pattern
        while len(self._patterns) > self.config.max_patterns:
            self._patterns.popitem(last=False)
        self._register(a, b, pid)
        return pattern

    def _register(self, start: int, end: int, pattern_id: str) -> None:
        bisect.insort(self._occurrences, (start, end, pattern_id))

    def _prune(self) -> None:
        assert self._ring is not None
        oldest = self._ring.start
        if self._occurrences and self._occurrences[0][0] < oldest:
            self._occurrences = [o for o in self._occurrences if o[1] >= oldest]
        self._periodic.prune(oldest)

    def _novelty_step(self, flush: bool) -> list[Event]:
        c = self.config
        if c.novelty_threshold is None or self._ring is None or self._index is None:
            return []
        enough = self._index.size * c.segment_hop_s >= c.novelty_min_history_s
        run = self._novelty.step(self._last_best, enough, self._ring.end, flush)
        if run is None:
            return []
        start, end, score = run
        self.stats.novelties += 1
        return [NoveltyEvent(stream=self.stream, start_s=self._seconds(start), end_s=self._end_seconds(end),
                             score=round(score, 4), detected_at_s=self._end_seconds(self._ring.end - 1))]


def _unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 1e-6 else v).astype(np.float32)
