"""Frame normalisation and the activity gate of the pattern matcher (sans-IO).

:class:`FrameNormalizer` turns raw feature frames (log-mel dB or Wav2Vec2 hidden states) into
unit vectors whose cosine similarity compares *content*, not level, channel or noise:

0. optionally (log-power features only) per-band noise flooring (:class:`BandFloor`): each
   band is raised to its own recent minimum + a margin, so a band buried in noise turns
   into a constant that step 4 removes instead of a stream of random values;
1. per-frame centring (subtract the frame's mean over its dimensions): for log-mel this
   removes overall gain exactly, since a gain change adds a constant to every band;
2. optionally a cepstral transform (orthonormal DCT-II over the dimensions, keeping
   coefficients ``1 … cepstral_coefficients - 1``): decorrelates log-mel bands, so that
   similarity is not dominated by spectral tilt; measured on the evaluation streams it
   doubles the separation of true repeats from unrelated frames (``docs/matcher.md``);
3. a fixed random projection to at most ``frame_dim`` dimensions (seeded, so every process
   and the pattern library agree on the space; keeps an hour of 768-d frames in memory);
4. removal of a running mean and division by a running standard deviation per dimension
   (exponentially weighted over ``mean_time_constant_frames``, updated only from active
   frames): removes the stationary part of the signal — the channel, a steady noise bed, the
   average spectrum of the programme — and equalises dimensions, so unrelated frames score
   near 0 and repeats stand out; optionally a second, *fast* running mean (time constant
   ``fast_time_constant_frames``, ~0.5 s) is removed first: a high-pass on each dimension's
   trajectory that keeps how the sound moves (syllables, notes) and drops what is steady over
   a second — a voice's timbre, and above all the spectrum of noise that started a moment
   ago, which the slow statistics cannot follow (``docs/matcher.md``, "Representation");
5. L2 normalisation (frames with no deviation left become zero vectors and match nothing).

:class:`ActivityGate` marks frames *active* when their DC-removed energy is above both an
absolute floor (digital silence, zero padding, DC offsets) and a tracked noise floor plus a
margin (constant noise beds), and the energy has moved by at least ``min_range_db`` within
the last ``range_frames`` frames (steady hum and other stationary tones, even right after
louder sound, when the noise floor has not caught up yet). Inactive frames are never indexed
or queried and count as neither hit nor miss while a repeat is being followed.
"""

from __future__ import annotations

import collections

import numpy as np
import numpy.typing as npt

__all__ = ["ActivityGate", "BandFloor", "FrameNormalizer", "PROJECTION_SEED", "unit_rows"]

#: Seed of the random projection; part of the feature space stored in pattern libraries.
PROJECTION_SEED = 20240917
_EPS = 1e-6
_FAST_WARMUP_FRAMES = 150  # 3 s at 50 frames/s


def _projection(input_dim: int, frame_dim: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(PROJECTION_SEED + input_dim)
    matrix: npt.NDArray[np.float32] = (rng.standard_normal((input_dim, frame_dim)) / np.sqrt(frame_dim)).astype(np.float32)
    return matrix


def _dct_basis(input_dim: int, coefficients: int) -> npt.NDArray[np.float32]:
    """Columns 1 … coefficients-1 of the orthonormal DCT-II matrix (``[input_dim, k]``)."""
    n = np.arange(input_dim)
    k = np.arange(1, min(coefficients, input_dim))
    basis: npt.NDArray[np.float32] = (
        np.cos(np.pi * (n[:, None] + 0.5) * k[None, :] / input_dim) * np.sqrt(2.0 / input_dim)
    ).astype(np.float32)
    return basis


class FrameNormalizer:
    """Per-stream frame normalisation state.

    Args:
        input_dim: Dimension of the raw frames.
        frame_dim: Maximum dimension kept (a random projection is applied above it).
        center: Subtract each frame's mean over its dimensions first.
        mean_time_constant_frames: Time constant of the running mean and variance, in frames.
        cepstral_coefficients: Apply a DCT and keep coefficients 1 … n-1 (0: off).
        variance_normalize: Divide by the running standard deviation per dimension.
        fast_time_constant_frames: Time constant of the fast running mean removed from each
            dimension before the slow statistics (0: off).
        band_floor: Per-band noise flooring applied to the raw frames first (None: off).
        fast_weight: Share of the fast view in the cosine of two frames (0 … 1).
    """

    def __init__(
        self,
        input_dim: int,
        frame_dim: int,
        center: bool,
        mean_time_constant_frames: float,
        cepstral_coefficients: int = 0,
        variance_normalize: bool = True,
        fast_time_constant_frames: float = 0.0,
        band_floor: BandFloor | None = None,
        fast_weight: float = 0.5,
    ) -> None:
        if input_dim < 1 or frame_dim < 1:
            raise ValueError(f"input_dim={input_dim}, frame_dim={frame_dim}; expected >= 1")
        if not 0.0 <= fast_weight <= 1.0:
            raise ValueError(f"fast_weight={fast_weight}; expected 0 .. 1")
        self.input_dim = input_dim
        self.center = center
        self.variance_normalize = variance_normalize
        self._dct = _dct_basis(input_dim, cepstral_coefficients) if cepstral_coefficients > 1 else None
        width = self._dct.shape[1] if self._dct is not None else input_dim
        self._projection = _projection(width, frame_dim) if width > frame_dim else None
        self.dim = frame_dim if width > frame_dim else width
        decay = float(np.exp(-1.0 / max(mean_time_constant_frames, 1.0)))
        self._slow = _RunningStats(self.dim, decay)
        self._fast_decay = float(np.exp(-1.0 / fast_time_constant_frames)) if fast_time_constant_frames > 0 else 0.0
        self._fast_mean: npt.NDArray[np.float64] | None = None
        self._fast = _RunningStats(self.dim, decay) if self._fast_decay > 0 else None
        self._fast_weight = fast_weight
        self._fast_seen = 0
        # The fast view starts after a few seconds of active audio, when the slow statistics
        # have settled too: a stream that starts inside a sound then compares like slow-only.
        self._fast_warmup = max(6.0 * fast_time_constant_frames, _FAST_WARMUP_FRAMES)
        if self._fast is not None:
            self.dim *= 2  # [slow view | fast view], each half weighted 1/sqrt(2)
        self._band_floor = band_floor

    @property
    def has_fast_view(self) -> bool:
        """Whether frames are ``[slow view | fast view]`` (halves of ``dim``); the fast half
        is zero until the fast mean has settled."""
        return self._fast is not None

    def _remove_fast_mean(self, x: npt.NDArray[np.float32], active: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        # Frame by frame (not per block like the slow statistics): the result must not
        # depend on block sizes at a 0.5 s time constant. ~50 small vector ops per second.
        a = self._fast_decay
        self._fast_seen += int(active.sum())
        out = np.empty_like(x)
        m = self._fast_mean
        for i in range(x.shape[0]):
            if active[i]:
                m = x[i].astype(np.float64) if m is None else a * m + (1.0 - a) * x[i]
            out[i] = x[i] - m if m is not None else 0.0
        self._fast_mean = m
        return out

    def project(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Steps 1–3 (centring, cepstrum, projection), without the running statistics."""
        x = np.asarray(frames, dtype=np.float32)
        if self.center:
            x = x - x.mean(axis=1, keepdims=True)
        if self._dct is not None:
            x = x @ self._dct
        if self._projection is not None:
            x = x @ self._projection
        return x

    def statistics(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Current running mean and standard deviation of the slow view (zeros/ones before
        any active frame)."""
        return self._slow.statistics()

    def normalize(
        self, frames: npt.NDArray[np.float32], active: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float32]:
        """Normalise a block (the running statistics are first updated with its active frames).

        Args:
            frames: ``[T, input_dim]`` raw frames.
            active: ``[T]`` gate decisions; only active frames update the statistics.

        Returns:
            ``[T, dim]`` float32 unit vectors (zero rows where nothing is left).
        """
        if self._band_floor is not None:
            frames = self._band_floor.apply(np.asarray(frames, dtype=np.float32))
        x = self.project(frames)
        slow = unit_rows(self._slow.standardize(x, active, self.variance_normalize))
        if self._fast is None:
            return slow
        z = self._remove_fast_mean(x, active)
        fast = unit_rows(self._fast.standardize(z, active, self.variance_normalize))
        warm = self._fast_seen - np.cumsum(active[::-1])[::-1] + active  # active frames seen up to each row
        cold = (warm < self._fast_warmup)[:, None]  # fast mean not settled yet: slow view only
        # The slow view places boundaries (the fast mean still carries some of the preceding
        # context at a repeat's onset and end); the fast view survives noise that started a
        # moment ago. Cosine of the joined vector = weighted sum of the two cosines.
        w = self._fast_weight
        return np.concatenate(
            [np.where(cold, slow, slow * np.float32(np.sqrt(1 - w))), np.where(cold, 0.0, fast * np.float32(np.sqrt(w)))],
            axis=1,
        ).astype(np.float32)


class _RunningStats:
    """Exponentially weighted per-dimension mean and variance over active frames."""

    def __init__(self, dim: int, decay: float) -> None:
        self._decay = decay
        self._sum = np.zeros(dim, dtype=np.float64)
        self._sum_sq = np.zeros(dim, dtype=np.float64)
        self._weight = 0.0

    def statistics(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        if self._weight <= 0.0:
            return np.zeros(self._sum.size), np.ones(self._sum.size)
        mean = self._sum / self._weight
        var = np.maximum(self._sum_sq / self._weight - mean**2, 0.0)
        return mean, np.sqrt(var) + 1e-3 * (np.sqrt(var.mean()) + 1e-9)

    def standardize(
        self, x: npt.NDArray[np.float32], active: npt.NDArray[np.bool_], divide: bool
    ) -> npt.NDArray[np.float32]:
        n_active = int(active.sum())
        if n_active:
            decay = self._decay**n_active
            xa = x[active].astype(np.float64)
            self._sum = decay * self._sum + xa.sum(axis=0)
            self._sum_sq = decay * self._sum_sq + (xa**2).sum(axis=0)
            self._weight = decay * self._weight + n_active
        mean, std = self.statistics()
        y = x - mean.astype(np.float32)
        return (y / std.astype(np.float32) if divide else y).astype(np.float32)


def unit_rows(y: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """L2-normalise rows; rows with (almost) nothing left become zeros."""
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return np.where(norms > _EPS, y / np.maximum(norms, _EPS), 0.0).astype(np.float32)


class BandFloor:
    """Per-band noise floor (minimum statistics) and flooring of raw log-power frames.

    The floor of each band is its minimum over the last ``window_buckets`` buckets of
    ``bucket_frames`` frames; frames are raised to ``floor + margin_db``, so that a band
    buried in noise becomes (nearly) constant over time and the running mean removal takes it
    out, while bands where the sound rises above the noise keep their shape.

    Args:
        dim: Bands per frame.
        bucket_frames: Frames per minimum bucket.
        window_buckets: Buckets in the floor window.
        margin_db: Height above the minimum where flooring starts.
    """

    def __init__(self, dim: int, bucket_frames: int, window_buckets: int, margin_db: float) -> None:
        if dim < 1 or margin_db < 0:
            raise ValueError(f"dim={dim}, margin_db={margin_db}; expected dim >= 1 and margin_db >= 0")
        self.margin_db = margin_db
        self._bucket_frames = max(1, bucket_frames)
        self._buckets: collections.deque[npt.NDArray[np.float32]] = collections.deque(maxlen=max(1, window_buckets))
        self._current = np.full(dim, np.inf, np.float32)
        self._count = 0

    def apply(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Floor a block of ``[T, dim]`` frames (the floor includes each frame itself).

        Raises:
            ValueError: Frames of another width than ``dim``.
        """
        if frames.ndim != 2 or frames.shape[1] != self._current.shape[0]:
            raise ValueError(f"frames have shape {frames.shape}; expected [T, {self._current.shape[0]}]")
        out = np.empty_like(frames)
        done = self._done()
        for i in range(frames.shape[0]):
            self._current = np.minimum(self._current, frames[i])
            out[i] = frames[i] if done is None else np.maximum(frames[i], np.minimum(done, self._current) + self.margin_db)
            self._count += 1
            if self._count >= self._bucket_frames:
                self._buckets.append(self._current)
                self._current = np.full_like(self._current, np.inf)
                self._count = 0
                done = self._done()
        return out

    def _done(self) -> npt.NDArray[np.float32] | None:
        # No flooring before a full window of history: a stream that starts inside a sound
        # would otherwise floor that sound at its own minimum.
        if len(self._buckets) < (self._buckets.maxlen or 1):
            return None
        floor: npt.NDArray[np.float32] = np.min(np.stack(self._buckets), axis=0)
        return floor


class ActivityGate:
    """Energy gate with an absolute floor and a tracked noise floor.

    The noise floor is the minimum frame energy over the last ``window_buckets`` buckets of
    ``bucket_frames`` frames (minimum statistics): it follows a steady background within
    the window length, and sounds must rise ``margin_db`` above it to count.

    Args:
        floor_db: Absolute floor (dB re full-scale square wave).
        margin_db: Required rise above the tracked noise floor.
        bucket_frames: Frames per minimum bucket.
        window_buckets: Buckets in the noise-floor window.
        min_range_db: Minimum energy movement within ``range_frames`` (0: off).
        range_frames: Window of that test (this frame and the ones before it).
    """

    def __init__(
        self,
        floor_db: float,
        margin_db: float,
        bucket_frames: int,
        window_buckets: int,
        min_range_db: float = 0.0,
        range_frames: int = 25,
    ) -> None:
        self.floor_db = floor_db
        self.margin_db = margin_db
        self.min_range_db = min_range_db
        self._history = np.zeros(0, dtype=np.float32)
        self._range_frames = max(1, range_frames)
        self._bucket_frames = max(1, bucket_frames)
        self._buckets: collections.deque[float] = collections.deque(maxlen=max(1, window_buckets))
        self._current_min = np.inf
        self._current_count = 0

    @property
    def noise_floor_db(self) -> float:
        """Current noise-floor estimate (``inf`` before any frame)."""
        mins = [*self._buckets, self._current_min]
        return float(min(mins))

    def update(self, energy_db: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        """Gate a block of frames (call with blocks that do not straddle buckets for
        results independent of block sizes).

        Returns:
            ``[T]`` bool: True where the frame is active.
        """
        e = np.asarray(energy_db, dtype=np.float32)
        if e.size == 0:
            return np.zeros(0, dtype=bool)
        self._current_min = min(self._current_min, float(e.min()))
        self._current_count += int(e.size)
        # The relative floor needs history: a stream that starts loud (mid-sound) would
        # otherwise gate its own first second.
        relative = self.noise_floor_db + self.margin_db if len(self._buckets) >= 2 else -np.inf
        threshold = max(self.floor_db, relative)
        active = e > threshold
        if self.min_range_db > 0:
            joined = np.concatenate([self._history, e])
            pad = np.full(max(0, self._range_frames - 1 - self._history.size), joined[0], np.float32)
            windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, joined]), self._range_frames)
            active &= (windows.max(axis=1) - windows.min(axis=1)) >= self.min_range_db
            self._history = joined[-(self._range_frames - 1) :] if self._range_frames > 1 else joined[:0]
        if self._current_count >= self._bucket_frames:
            self._buckets.append(self._current_min)
            self._current_min = np.inf
            self._current_count = 0
        return np.asarray(active, dtype=bool)
