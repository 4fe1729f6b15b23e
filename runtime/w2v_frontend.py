"""Normalisation statistics and per-stream state for the split Wav2Vec2 graph.

A split export (``frontend.onnx`` + ``encoder.onnx``, see ``docs/manifest.md``) takes the two
statistics Wav2Vec2 normally computes over its whole input as graph *inputs*:

* the input normalisation (``do_normalize``): ``input_mean`` and ``input_std`` per row;
* for ``feat_extract_norm="group"`` models, the per-channel mean/variance of the GroupNorm
  after conv layer 0. That layer is linear with one input channel (kernel ``K``, stride
  ``S``), so its channel statistics are exact functions of the mean and covariance of the
  ``K``-sample input patches at stride ``S``: ``mean_c = w_c·m + b_c``,
  ``var_c = w_cᵀ C w_c``. The graph takes ``patch_mean [B, K]`` and ``patch_cov [B, K, K]``
  of the *raw* audio and derives the channel statistics itself (after applying the input
  normalisation to them), so a caller only ever measures audio.

:func:`window_stats` measures one input per row, which reproduces the monolithic graph.
:class:`RunningStats` accumulates the same sums over a stream (exact, float64), so a live
stream can normalise with the statistics of everything it has heard instead of one window.
:class:`FrontEndState` adds the bounded ring of conv frames that lets a stream run the front
end once per hop (``ostinato.stream.infer``).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ostinato.runtime.features import num_frames

__all__ = [
    "FrontEndConfig",
    "FrontEndState",
    "FrontEndStats",
    "FrontEndFn",
    "RunningStats",
    "window_stats",
]

NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor's variance floor

#: ``frontend(windows [B, N], stats) -> conv frames [B, T, C]`` (``Wav2Vec2Model.frontend``).
FrontEndFn = Callable[[npt.NDArray[np.float32], "FrontEndStats | None"], npt.NDArray[np.float32]]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class FrontEndStats:
    """Statistics fed to ``frontend.onnx``, one row per batch row.

    Args:
        input_mean: ``[B, 1]`` float32 mean of the raw audio (0 when the model does not
            normalise its input).
        input_std: ``[B, 1]`` float32 ``sqrt(var + 1e-7)`` of the raw audio (1 when the model
            does not normalise).
        patch_mean: ``[B, K]`` float32 mean of the raw conv-0 input patches (group models).
        patch_cov: ``[B, K, K]`` float32 covariance of those patches (group models).
    """

    input_mean: npt.NDArray[np.float32]
    input_std: npt.NDArray[np.float32]
    patch_mean: npt.NDArray[np.float32] | None = None
    patch_cov: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        rows = self.input_mean.shape[0]
        if self.input_mean.shape != (rows, 1) or self.input_std.shape != (rows, 1):
            raise ValueError(
                f"input_mean {self.input_mean.shape}, input_std {self.input_std.shape}; expected [B, 1] each"
            )
        if (self.patch_mean is None) != (self.patch_cov is None):
            raise ValueError("patch_mean and patch_cov go together; got only one of them")

    @property
    def rows(self) -> int:
        """Batch rows."""
        return int(self.input_mean.shape[0])

    def feeds(self) -> dict[str, npt.NDArray[np.float32]]:
        """The statistics as ``frontend.onnx`` feeds (without ``input_values``)."""
        out = {"input_mean": self.input_mean, "input_std": self.input_std}
        if self.patch_mean is not None and self.patch_cov is not None:
            out["patch_mean"] = self.patch_mean
            out["patch_cov"] = self.patch_cov
        return out


def _patches(x: npt.NDArray[np.floating], kernel: int, stride: int) -> npt.NDArray[np.float64]:
    """``[B, T0, K]`` float64 conv-0 input patches (T0 = conv-0 output frames)."""
    view = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=-1)[..., ::stride, :]
    return view.astype(np.float64)


def window_stats(
    x: npt.NDArray[np.float32], normalize: bool, patch: tuple[int, int] | None
) -> FrontEndStats:
    """Statistics of each row of ``x`` on its own (what the monolithic graph does).

    Args:
        x: ``[B, N]`` raw audio, ``N >= K``.
        normalize: The model normalises its input (else mean 0 / std 1 are fed).
        patch: ``(kernel, stride)`` of conv layer 0 for group models, ``None`` otherwise.

    Returns:
        Per-row statistics.
    """
    rows = x.shape[0]
    if normalize:
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=1, keepdims=True)
        std = np.sqrt(x64.var(axis=1, keepdims=True) + NORM_EPS)
    else:
        mean, std = np.zeros((rows, 1)), np.ones((rows, 1))
    if patch is None:
        return FrontEndStats(mean.astype(np.float32), std.astype(np.float32))
    p = _patches(x, *patch)
    p_mean = p.mean(axis=1)
    centred = p - p_mean[:, None, :]
    cov = np.einsum("btk,btl->bkl", centred, centred) / p.shape[1]
    return FrontEndStats(mean.astype(np.float32), std.astype(np.float32), p_mean.astype(np.float32), cov.astype(np.float32))


class RunningStats:
    """Exact running sums of the audio and conv-0 patches of one stream (float64).

    Args:
        normalize: The model normalises its input.
        patch: ``(kernel, stride)`` of conv layer 0 (group models) or ``None``.
    """

    def __init__(self, normalize: bool, patch: tuple[int, int] | None) -> None:
        self.normalize = normalize
        self.patch = patch
        self.reset()

    def reset(self) -> None:
        """Forget everything."""
        self.samples = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self.patches = 0
        k = self.patch[0] if self.patch else 0
        self._p_sum = np.zeros(k)
        self._p_outer = np.zeros((k, k))

    def add(self, samples: npt.NDArray[np.float32], patch_input: npt.NDArray[np.float32] | None = None) -> None:
        """Count new audio.

        Args:
            samples: New audio samples (each counted once).
            patch_input: Audio whose conv-0 patches are new (starts at a multiple of the
                patch stride; its last ``K - S`` samples may be re-read by the next call,
                so the caller passes each patch position once). Default: ``samples``.
        """
        x = samples.astype(np.float64)
        self.samples += x.size
        self._sum += float(x.sum())
        self._sum_sq += float(np.dot(x, x))
        if self.patch is None:
            return
        src = samples if patch_input is None else patch_input
        if src.size < self.patch[0]:
            return
        p = _patches(src, *self.patch)
        self.patches += p.shape[0]
        self._p_sum += p.sum(axis=0)
        self._p_outer += p.T @ p

    def snapshot(self) -> FrontEndStats:
        """The statistics so far as one batch row (mean 0 / std 1 before any audio)."""
        n = max(self.samples, 1)
        if self.normalize and self.samples:
            mean = self._sum / n
            var = max(self._sum_sq / n - mean * mean, 0.0)
            std = math.sqrt(var + NORM_EPS)
        else:
            mean, std = 0.0, 1.0
        in_mean = np.full((1, 1), mean, dtype=np.float32)
        in_std = np.full((1, 1), std, dtype=np.float32)
        if self.patch is None:
            return FrontEndStats(in_mean, in_std)
        m = self._p_sum / max(self.patches, 1)
        cov = self._p_outer / max(self.patches, 1) - np.outer(m, m)
        return FrontEndStats(in_mean, in_std, m[None].astype(np.float32), cov[None].astype(np.float32))


@dataclasses.dataclass(frozen=True, slots=True)
class FrontEndConfig:
    """How a stream runs the split front end with running statistics and a frame cache.

    Args:
        freeze_after_s: Stop updating the running statistics after this much audio
            (``inf``: never; 0: keep the first window's). Frozen statistics make the cached path equal to recomputing
            every window with them (tests); a finite value also stops a long stream's
            statistics from drifting with the signal.
        cache_frames: Conv frames kept per stream (bounded ring). Windows longer than the
            ring, or older than its content, are computed whole without the cache.
    """

    freeze_after_s: float = math.inf
    cache_frames: int = 512

    def __post_init__(self) -> None:
        if not self.freeze_after_s >= 0:
            raise ValueError(f"freeze_after_s={self.freeze_after_s}; expected >= 0 (inf: never)")
        if not isinstance(self.cache_frames, int) or self.cache_frames < 1:
            raise ValueError(f"cache_frames={self.cache_frames!r}; expected a positive integer")


class FrontEndState:
    """One stream's running statistics and its ring of cached conv frames.

    Frame ``i`` of the stream (samples ``[320 i, 320 i + 400)``) is stored once computed;
    the ring keeps the newest ``cache_frames`` frames. Frames are only ever appended in
    order, so the cache holds a contiguous range ``[first_cached, next_frame)``.

    Args:
        config: Cache/statistics settings.
        normalize: The model normalises its input.
        patch: ``(kernel, stride)`` of conv layer 0 (group models) or ``None``.
        channels: Width of a conv frame.
        stride: Samples per frame (320).
        sample_rate: Sample rate (for ``freeze_after_s``).
        receptive_field: Samples one frame sees (400).
    """

    def __init__(
        self,
        config: FrontEndConfig,
        normalize: bool,
        patch: tuple[int, int] | None,
        channels: int,
        stride: int = 320,
        sample_rate: int = 16000,
        receptive_field: int = 400,
    ) -> None:
        self.config = config
        self.receptive_field = receptive_field
        self.stats = RunningStats(normalize, patch)
        self.channels = channels
        self.stride = stride
        self.sample_rate = sample_rate
        self._ring = np.zeros((config.cache_frames, channels), dtype=np.float32)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the stream (statistics and cached frames)."""
        self.stats.reset()
        self.next_frame = 0
        self._valid_from = 0
        self.frames_computed = 0
        self.frames_reused = 0
        self.uncached_windows = 0

    @property
    def first_cached(self) -> int:
        """Oldest frame still in the ring."""
        return max(self._valid_from, self.next_frame - self._ring.shape[0])

    def conv_frames(
        self, frontend: FrontEndFn, samples: npt.NDArray[np.float32], first_frame: int
    ) -> npt.NDArray[np.float32]:
        """Conv frames of one window, computing only the frames not cached yet.

        The window's audio starts at sample ``stride * first_frame``; its frames are
        ``[first_frame, first_frame + num_frames(len(samples)))``. Frames already in the ring
        are reused; newer ones are computed from the window's own audio (the new hop plus
        the 80-sample receptive overlap), counted in the running statistics first and then
        normalised with them, and stored. Frames the stream skipped (dropped windows) are
        never computed: the ring restarts at the window. Thread-safe (one lock per stream).

        Args:
            frontend: Runs ``frontend.onnx`` (``Wav2Vec2Model.frontend``).
            samples: The window's raw audio.
            first_frame: Global index of the window's first frame.

        Returns:
            ``[T, C]`` float32 conv frames.
        """
        stride, field = self.stride, self.receptive_field
        total = num_frames(samples.size, field, stride)
        if total < 1:
            raise ValueError(f"a window of {samples.size} samples has no frame (needs {field})")
        end = first_frame + total
        with self._lock:
            if first_frame < self.first_cached:  # older than the ring: compute, keep nothing
                self.uncached_windows += 1
                return self._run(frontend, samples, total)
            if first_frame > self.next_frame:
                self.next_frame = self._valid_from = first_frame
            new = self.next_frame
            if end > new:
                chunk = samples[(new - first_frame) * stride : (end - first_frame - 1) * stride + field]
                self.observe(chunk, new, end)
                self.store(new, self._run(frontend, chunk, end - new))
            if total > self._ring.shape[0]:  # the ring is smaller than one window
                self.uncached_windows += 1
                return self._run(frontend, samples, total)
            return self.cached(first_frame, end)

    def _run(self, frontend: FrontEndFn, chunk: npt.NDArray[np.float32], frames: int) -> npt.NDArray[np.float32]:
        stats = self.stats.snapshot() if self.stats.samples else None  # None: the chunk's own
        out: npt.NDArray[np.float32] = frontend(chunk[None, :], stats)[0]
        if out.shape[0] != frames:
            raise ValueError(f"front end gave {out.shape[0]} frames for {chunk.size} samples; expected {frames}")
        return out

    @property
    def frozen(self) -> bool:
        """Whether the statistics stopped updating (never before the first window's audio)."""
        return self.stats.samples > 0 and self.stats.samples >= self.config.freeze_after_s * self.sample_rate

    def observe(self, audio: npt.NDArray[np.float32], first_frame: int, end_frame: int) -> None:
        """Count the audio of frames ``[first_frame, end_frame)`` in the running statistics.

        ``audio`` starts at sample ``stride * first_frame`` and covers those frames. Each
        frame contributes its own ``stride`` samples (and their conv-0 patches) once.
        """
        if self.frozen or end_frame <= first_frame:
            return
        own = audio[: (end_frame - first_frame) * self.stride]
        patch_input = None
        if self.stats.patch is not None:
            kernel, step = self.stats.patch
            positions = own.size // step
            patch_input = audio[: (positions - 1) * step + kernel] if positions else audio[:0]
        self.stats.add(own, patch_input)

    def store(self, first_frame: int, frames: npt.NDArray[np.float32]) -> None:
        """Append frames ``[first_frame, first_frame + len)``; ``first_frame`` must be ``next_frame``."""
        if first_frame != self.next_frame:
            raise ValueError(f"frames must be stored in order: got {first_frame}, expected {self.next_frame}")
        size = self._ring.shape[0]
        for i, row in enumerate(frames[-size:], start=first_frame + max(0, len(frames) - size)):
            self._ring[i % size] = row
        self.next_frame = first_frame + len(frames)
        self.frames_computed += len(frames)

    def available(self, first_frame: int, end_frame: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Frames ``[first_frame, end_frame)`` where the ring has them (zeros elsewhere) and a 1/0 mask.

        Negative frame indices (before the stream) are never available. Not counted as reuse.
        """
        out = np.zeros((end_frame - first_frame, self.channels), dtype=np.float32)
        mask = np.zeros(end_frame - first_frame, dtype=np.float32)
        with self._lock:
            lo, hi = max(first_frame, self.first_cached, 0), min(end_frame, self.next_frame)
            if hi > lo:
                out[lo - first_frame : hi - first_frame] = self._ring[np.arange(lo, hi) % self._ring.shape[0]]
                mask[lo - first_frame : hi - first_frame] = 1.0
        return out, mask

    def cached(self, first_frame: int, end_frame: int) -> npt.NDArray[np.float32]:
        """Frames ``[first_frame, end_frame)`` from the ring (all must be cached)."""
        if first_frame < self.first_cached or end_frame > self.next_frame:
            raise ValueError(
                f"frames [{first_frame}, {end_frame}) not cached (ring holds [{self.first_cached}, {self.next_frame}))"
            )
        size = self._ring.shape[0]
        idx = np.arange(first_frame, end_frame) % size
        self.frames_reused += end_frame - first_frame
        return self._ring[idx]
