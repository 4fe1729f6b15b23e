"""Configuration, input block and counters of the pattern matcher."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from ostinato.stream.frame_norm import ActivityGate, BandFloor, FrameNormalizer

__all__ = ["FeatureBlock", "MatcherConfig", "MatcherStats", "evidence_overrides"]


@dataclasses.dataclass(frozen=True, slots=True)
class MatcherConfig:
    """Settings of :class:`~ostinato.stream.matcher.PatternMatcher` (see ``docs/matcher.md``).

    Args:
        buffer_s: Audio history searched for repeats (hard memory bound; 10 min default,
            1 h and more supported).
        frame_dim: Frames with more dimensions are randomly projected down to this.
        center_frames: Subtract each frame's mean over its dimensions (gain invariance for
            log-mel).
        cepstral_coefficients: DCT over the frame dimensions keeping coefficients
            1 … n-1 (0: off). Use 40 for 64-band log-mel (:meth:`for_features`).
        variance_normalize: Divide by a running per-dimension standard deviation.
        mean_time_constant_s: Time constant of the running mean removed from frames.
        fast_mean_time_constant_s: Time constant of a fast running mean removed first
            (a high-pass on each dimension's trajectory: removes noise that started a moment
            ago and a voice's timbre; 0: off; 0.5 for log-mel, see :meth:`for_features`).
        band_floor_window_s: Window of the per-band noise floor that raw log-power frames
            are raised to (plus ``band_floor_margin_db``; 0: off; 1 s for log-mel). Only for
            features in dB.
        band_floor_margin_db: Height above the per-band minimum where flooring starts.
        energy_floor_db: Frames quieter than this (DC removed) are inactive.
        noise_margin_db: Frames must also exceed the tracked noise floor by this much.
        noise_window_s: Window of the noise-floor tracker.
        min_energy_range_db: Frames are inactive unless the energy moved by this much within
            ``energy_range_s`` (stationary hum/tones; 0: off).
        energy_range_s: Look-back of that test.
        min_active_fraction: Segments with fewer active frames are neither indexed nor queried.
        segment_s: Length of a search segment.
        segment_hop_s: Spacing of search segments (also the search rate).
        segment_parts: Sub-blocks pooled per segment embedding (coarse temporal order).
        segment_slow_weight: With a fast view (``fast_mean_time_constant_s``): share of the
            slow view in the similarity of two segments once the fast view has settled on
            both (0.5: like frames; 0 for log-mel: the candidate search compares how the sound
            moves, not the noise that appeared with it; ``docs/matcher.md`` item 10).
        candidates: Earlier segments examined per search.
        candidate_threshold: Minimum segment cosine for a candidate.
        start_z: Minimum evidence (z, see ``docs/matcher.md``) of a candidate's one-segment
            alignment to follow it.
        hit_z: A frame matches while its smoothed diagonal similarity is this many
            background standard deviations above the background mean.
        hit_fraction: ... and at least this fraction of the way from the local background
            to the similarity of the segment that started the repeat (so a strong repeat
            ends where it stops being strong).
        smooth_s: Averaging length of the per-frame hit decision.
        background_offsets_s: Lag offsets of the parallel diagonals whose similarity is the
            local background of a repeat (each used with both signs). Near offsets
            (0.1–0.4 s) make the test sharp: a true repeat matches at one lag only, while a
            similar voice or the same intonation matches almost as well 0.1 s off.
        detection_z: Evidence at which the score is 0.5.
        score_scale_z: Evidence difference that moves the score from 0.5 to 0.73.
        match_threshold: Minimum score of a reported match (0.5: evidence >= detection_z).
        verify_min_evidence: Second-stage verification (log-power features only): a repeat
            is reported only if the evidence of its pair contrast on raw frames with symmetric
            noise flooring (:func:`~ostinato.stream.verify.pair_evidence`) reaches this (None:
            off; set for log-mel by :meth:`for_features`). Keeps a ring of raw frames (memory).
        verify_coefficients: Cepstral coefficients of that comparison.
        verify_margin_db: Margin above the pair's common per-band floor.
        verify_max_mismatch: ... and if at most this fraction of the frames loud in both
            occurrences mismatches (:func:`~ostinato.stream.verify.loud_mismatch`; a hard
            negative's changed words; None: off; 0.1 for log-mel).
        verify_loud_db: Level above the pair's floor (mean over bands, dB) of a loud frame.
        verify_aligned_evidence: Lower evidence that suffices for an *aligned* pair: at
            least ``verify_aligned_activity`` of the frames of its span active in both
            occurrences (their pauses line up) and no loud frame mismatching (at most 2 %).
            A repeat buried in noise loses pair evidence but keeps both; a chance
            resemblance between different speech or notes rarely has either (None: off;
            0.45 for log-mel).
        verify_aligned_activity: Fraction of the span active in both occurrences of such a pair.
        min_pattern_s: Shortest repeat reported.
        short_noisy_pattern_s: ... except a pair heard in different noise (one occurrence at
            least ``noisy_floor_db`` closer to its noise floor), aligned and with full pair
            evidence, which is reported down to this length (None: off; 0.9 s for log-mel, needs
            the verification; ``docs/matcher.md`` item 11).
        noisy_floor_db: That difference (``verify.floor_difference``, dB).
        max_pattern_s: Longest stretch followed before a track is cut.
        min_lag_s: Minimum distance between an occurrence and the one it repeats.
        tempo_tolerance: Relative tempo difference tolerated (0.05 = ±5 %).
        end_patience_s: Non-matching audio that ends a repeat (sets detection latency).
        max_gap_s: Inactive audio (pauses) tolerated inside a repeat.
        max_dip_s: Non-matching active audio tolerated inside a reported repeat (longer
            dips split it; the longest piece is kept).
        max_extend_back_s: How far back a repeat's start is searched once detected.
        refractory_s: A pattern is not reported again until this long after its last report.
        periodic_ratio: A repeat longer than this many lags is a loop (periodic music,
            a groove) and is not reported.
        max_tracks: Repeats followed at once (further candidates are dropped and counted).
        max_patterns: Pattern records kept for stable ids.
        novelty_threshold: Best segment cosine below which audio is reported novel
            (None: no novelty events).
        novelty_min_history_s: Indexed history needed before novelty is judged.
        novelty_max_s: A novelty run is reported at the latest after this long.
        pattern_id_prefix: Prefix of pattern ids.
        sample_rate: Rate of the frame positions (Hz).
        frame_stride_samples: Frame hop (320 for Wav2Vec2 and log-mel).
        frame_length_samples: Frame window (400).
    """

    buffer_s: float = 600.0
    frame_dim: int = 128
    center_frames: bool = True
    cepstral_coefficients: int = 0
    variance_normalize: bool = True
    mean_time_constant_s: float = 10.0
    fast_mean_time_constant_s: float = 0.0
    band_floor_window_s: float = 0.0
    band_floor_margin_db: float = 6.0
    fast_weight: float = 0.5
    energy_floor_db: float = -60.0
    noise_margin_db: float = 3.0
    noise_window_s: float = 10.0
    min_energy_range_db: float = 1.0
    energy_range_s: float = 0.5
    min_active_fraction: float = 0.5
    segment_s: float = 1.0
    segment_hop_s: float = 0.2
    segment_parts: int = 2
    segment_slow_weight: float = 0.5
    candidates: int = 8
    candidate_threshold: float = 0.2
    start_z: float = 3.0
    hit_z: float = 1.0
    hit_fraction: float = 0.38
    smooth_s: float = 0.16
    background_offsets_s: tuple[float, ...] = (0.1, 0.16, 0.24, 0.4)
    detection_z: float = 7.5
    score_scale_z: float = 1.5
    match_threshold: float = 0.5
    verify_min_evidence: float | None = None
    verify_coefficients: int = 40
    verify_margin_db: float = 10.0
    verify_max_mismatch: float | None = None
    verify_loud_db: float = 6.0
    verify_aligned_evidence: float | None = None
    verify_aligned_activity: float = 0.9
    min_pattern_s: float = 1.2
    short_noisy_pattern_s: float | None = None
    noisy_floor_db: float = 6.0
    max_pattern_s: float = 60.0
    min_lag_s: float = 1.0
    tempo_tolerance: float = 0.05
    end_patience_s: float = 0.2
    max_gap_s: float = 0.4
    max_dip_s: float = 0.16
    max_extend_back_s: float = 10.0
    refractory_s: float = 2.0
    periodic_ratio: float = 1.5
    max_tracks: int = 16
    max_patterns: int = 4096
    novelty_threshold: float | None = None
    novelty_min_history_s: float = 30.0
    novelty_max_s: float = 10.0
    pattern_id_prefix: str = ""
    sample_rate: int = 16000
    frame_stride_samples: int = 320
    frame_length_samples: int = 400

    def __post_init__(self) -> None:
        positive = {
            "buffer_s": self.buffer_s,
            "mean_time_constant_s": self.mean_time_constant_s,
            "noise_window_s": self.noise_window_s,
            "segment_s": self.segment_s,
            "segment_hop_s": self.segment_hop_s,
            "min_pattern_s": self.min_pattern_s,
            "max_pattern_s": self.max_pattern_s,
            "end_patience_s": self.end_patience_s,
            "sample_rate": self.sample_rate,
            "frame_stride_samples": self.frame_stride_samples,
            "frame_length_samples": self.frame_length_samples,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name}={value!r}; expected > 0")
        if self.buffer_s < 4 * self.segment_s or self.buffer_s > 24 * 3600:
            raise ValueError(f"buffer_s={self.buffer_s}; expected {4 * self.segment_s} .. 86400 s")
        if self.segment_hop_s > self.segment_s:
            raise ValueError(f"segment_hop_s={self.segment_hop_s}; expected <= segment_s={self.segment_s}")
        if not 1 <= self.segment_parts <= 8:
            raise ValueError(f"segment_parts={self.segment_parts}; expected 1..8")
        if self.frame_dim < 8:
            raise ValueError(f"frame_dim={self.frame_dim}; expected >= 8")
        if not 0.0 <= self.tempo_tolerance <= 0.2:
            raise ValueError(f"tempo_tolerance={self.tempo_tolerance}; expected 0 .. 0.2")
        for name in ("fast_mean_time_constant_s", "band_floor_window_s", "band_floor_margin_db"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected >= 0 (0: off)")
        if not self.background_offsets_s or not all(0 < o <= 5.0 for o in self.background_offsets_s):
            raise ValueError(f"background_offsets_s={self.background_offsets_s!r}; expected 1+ offsets in (0, 5] s")
        if self.cepstral_coefficients < 0 or self.score_scale_z <= 0 or self.smooth_s <= 0:
            raise ValueError("cepstral_coefficients must be >= 0, score_scale_z and smooth_s > 0")
        for name in ("match_threshold", "candidate_threshold", "min_active_fraction", "hit_fraction", "segment_slow_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r}; expected a value in [0, 1]")
        if self.max_pattern_s < self.min_pattern_s:
            raise ValueError(f"max_pattern_s={self.max_pattern_s}; expected >= min_pattern_s={self.min_pattern_s}")
        if self.min_lag_s < 0 or self.max_gap_s < 0 or self.refractory_s < 0 or self.max_extend_back_s < 0:
            raise ValueError("min_lag_s, max_gap_s, refractory_s and max_extend_back_s must be >= 0")
        if self.periodic_ratio < 1.0:
            raise ValueError(f"periodic_ratio={self.periodic_ratio}; expected >= 1")
        if self.candidates < 1 or self.max_tracks < 1 or self.max_patterns < 1:
            raise ValueError("candidates, max_tracks and max_patterns must be >= 1")
        if self.verify_max_mismatch is not None and not 0.0 <= self.verify_max_mismatch <= 1.0:
            raise ValueError(f"verify_max_mismatch={self.verify_max_mismatch}; expected None or 0 .. 1")
        if not 0.0 <= self.verify_aligned_activity <= 1.0:
            raise ValueError(f"verify_aligned_activity={self.verify_aligned_activity}; expected 0 .. 1")
        if self.short_noisy_pattern_s is not None and (
            not 0 < self.short_noisy_pattern_s <= self.min_pattern_s or self.verify_min_evidence is None
        ):
            raise ValueError(f"short_noisy_pattern_s={self.short_noisy_pattern_s}; expected None or (0, "
                             f"min_pattern_s={self.min_pattern_s}], with verify_min_evidence set")
        if self.verify_loud_db < 0:
            raise ValueError(f"verify_loud_db={self.verify_loud_db}; expected >= 0")
        if self.novelty_threshold is not None and not -1.0 <= self.novelty_threshold <= 1.0:
            raise ValueError(f"novelty_threshold={self.novelty_threshold}; expected None or -1 .. 1")

    @classmethod
    def for_features(cls, kind: str, **overrides: object) -> MatcherConfig:
        """Defaults for a feature kind: ``logmel`` (cepstral transform, fast mean removal,
        per-band noise flooring, 4-part segment embeddings, second-stage verification and a
        lower decision point; chosen on tuning seeds, ``docs/matcher.md``) or ``wav2vec2``.

        Raises:
            ValueError: Unknown kind.
        """
        kinds: dict[str, dict[str, object]] = {
            "logmel": {
                "cepstral_coefficients": 40, "fast_mean_time_constant_s": 0.5, "band_floor_window_s": 1.0,
                "segment_parts": 4, "segment_slow_weight": 0.0, "detection_z": 5.0, "verify_min_evidence": 0.6,
                "verify_max_mismatch": 0.1, "verify_aligned_evidence": 0.45, "short_noisy_pattern_s": 0.9,
            },
            "wav2vec2": {},
        }
        base = kind.split(":", 1)[0]
        if base not in kinds:
            raise ValueError(f"feature kind {kind!r}; expected one of {sorted(kinds)}")
        return cls(**{**kinds[base], **overrides})  # type: ignore[arg-type]

    @property
    def frame_rate_hz(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.frame_stride_samples

    def activity_gate(self) -> ActivityGate:
        """A fresh gate with these settings."""
        return ActivityGate(
            self.energy_floor_db, self.noise_margin_db, self.frames(0.5), max(1, round(self.noise_window_s / 0.5)),
            self.min_energy_range_db, self.frames(self.energy_range_s),
        )

    def frame_normalizer(self, input_dim: int) -> FrameNormalizer:
        """A fresh frame normaliser with these settings for raw frames of ``input_dim``."""
        fast = self.fast_mean_time_constant_s * self.frame_rate_hz
        return FrameNormalizer(
            input_dim, self.frame_dim, self.center_frames, self.frames(self.mean_time_constant_s),
            self.cepstral_coefficients, self.variance_normalize, fast,
            self._band_floor(input_dim), self.fast_weight,
        )

    def _band_floor(self, input_dim: int) -> BandFloor | None:
        if self.band_floor_window_s <= 0:
            return None
        buckets = max(1, round(self.band_floor_window_s / 0.2))
        return BandFloor(input_dim, self.frames(0.2), buckets, self.band_floor_margin_db)

    def frames(self, seconds: float) -> int:
        """Whole number of frames in ``seconds`` (at least 1)."""
        return max(1, int(round(seconds * self.frame_rate_hz)))


def evidence_overrides(min_evidence: float) -> dict[str, float]:
    """The :meth:`MatcherConfig.for_features` overrides of a log-mel operating point
    (``--min-evidence``, ``docs/matcher.md`` *Operating points*): the pair evidence both plain
    and aligned pairs need.

    Raises:
        ValueError: ``min_evidence`` outside (0, 10] (the message leaves out the value).
    """
    if not 0.0 < min_evidence <= 10.0:
        raise ValueError("expected 0 < E <= 10 (default 0.6)")
    return {"verify_min_evidence": min_evidence, "verify_aligned_evidence": min_evidence}


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class FeatureBlock:
    """Consecutive frames of one stream for :meth:`PatternMatcher.push`.

    Args:
        frames: ``[T, H]`` float frames.
        energy_db: ``[T]`` DC-removed frame energy in dB
            (:func:`ostinato.runtime.logmel.frame_energy_db`); drives the silence gate.
            When None every frame counts as active and only the contrast scoring guards
            against stationary sound.
        start_frame: Global index of ``frames[0]`` (None: right after the previous block).
    """

    frames: npt.NDArray[np.float32]
    energy_db: npt.NDArray[np.float32] | None = None
    start_frame: int | None = None

    def energy_array(self, count: int) -> npt.NDArray[np.float32]:
        """Energy per frame (+100 dB everywhere when absent)."""
        if self.energy_db is None:
            return np.full(count, 100.0, np.float32)
        energy = np.asarray(self.energy_db, dtype=np.float32)
        if energy.shape != (count,):
            raise ValueError(f"energy_db has shape {energy.shape}; expected ({count},) to match frames")
        return energy


@dataclasses.dataclass(slots=True)
class MatcherStats:
    """Running counts of one matcher (exported as metrics by the stage)."""

    frames: int = 0
    active_frames: int = 0
    gap_frames: int = 0
    segments: int = 0
    candidates: int = 0
    dropped_candidates: int = 0
    tracks: int = 0
    periodic_tracks: int = 0
    matches: int = 0
    novelties: int = 0
    rejected_short: int = 0
    rejected_score: int = 0
    rejected_periodic: int = 0
    rejected_refractory: int = 0
    rejected_verify: int = 0
