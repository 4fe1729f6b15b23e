"""Sans-IO overlapping windows whose frames stitch exactly into the offline frame sequence.

Wav2Vec2's convolutional front end emits frame ``i`` from samples
``[320 i, 320 i + 400)`` (stride 320, receptive field 400 at 16 kHz), so a whole stream of
``N`` samples has ``floor((N - 400) / 320) + 1`` frames. A :class:`Windower` cuts windows of
a fixed shape::

    |<- left context ->|<------ hop ------>|<- right context ->|<- 80 ->|
    ^ start_sample (multiple of 320)       core frames are emitted, context frames trimmed

with all three parts multiples of the 320-sample stride, plus the 80 samples
(receptive field - stride) the last frame needs. Window ``k`` emits global frames
``[k h, (k + 1) h)`` where ``h = hop / 320``, so consecutive windows never duplicate or skip a
frame and frame ``i`` still starts at sample ``320 i``. Windows near the start, where the
left context would reach before sample 0, start at sample 0 instead (the shape stays fixed;
they get extra right context). :meth:`Windower.flush` ends the stream with one last window
aligned to the end of the audio, which emits the remaining frames.

See ``docs/streaming.md`` for the measured effect of context on fidelity.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from ostinato.stream.errors import ConfigError, InvalidAudioError
from ostinato.stream.frames import Window

__all__ = [
    "DEFAULT_HOP_S",
    "DEFAULT_LEFT_CONTEXT_S",
    "DEFAULT_RIGHT_CONTEXT_S",
    "Windower",
    "WindowerConfig",
    "num_frames",
]

#: Defaults chosen from the fidelity table in docs/streaming.md.
DEFAULT_HOP_S = 0.5
DEFAULT_LEFT_CONTEXT_S = 1.0
DEFAULT_RIGHT_CONTEXT_S = 0.48


def num_frames(num_samples: int, frame_stride_samples: int = 320, receptive_field_samples: int = 400) -> int:
    """Number of frames a model with this geometry emits for ``num_samples`` samples.

    Args:
        num_samples: Input length in samples.
        frame_stride_samples: Frame hop in samples.
        receptive_field_samples: Samples that make one frame.

    Returns:
        ``floor((n - rf) / stride) + 1``, or 0 when the input is shorter than one frame.
    """
    if num_samples < receptive_field_samples:
        return 0
    return (num_samples - receptive_field_samples) // frame_stride_samples + 1


@dataclasses.dataclass(frozen=True, slots=True)
class WindowerConfig:
    """Window geometry, all lengths in samples at ``sample_rate``.

    Args:
        hop_samples: New audio per window (the emitted core), a multiple of the stride.
        left_context_samples: Past audio before the core, a multiple of the stride.
        right_context_samples: Future audio after the core, a multiple of the stride. Adds
            latency: a window waits for it.
        frame_stride_samples: Model frame stride (320 for Wav2Vec2).
        receptive_field_samples: Model receptive field (400 for Wav2Vec2).
        sample_rate: Sample rate the lengths refer to.
        short_start: Cut a stream's first windows (their left context clipped at sample 0)
            as soon as their core and right context have arrived, shorter than
            :attr:`window_samples`, instead of waiting for a full window. Off by default: every
            window but a stream's last then has the same shape (accelerators like fixed shapes).
            The K/V path turns it on: it runs only a window's hop + right context either way,
            and otherwise a stream's first ``left / hop`` windows wait for one full window and
            arrive together (with many streams starting at once, one burst of their runs).

    Raises:
        ConfigError: If a length is negative, not a multiple of the stride, or the hop is 0.
    """

    hop_samples: int = round(DEFAULT_HOP_S * 16000)
    left_context_samples: int = round(DEFAULT_LEFT_CONTEXT_S * 16000)
    right_context_samples: int = round(DEFAULT_RIGHT_CONTEXT_S * 16000)
    frame_stride_samples: int = 320
    receptive_field_samples: int = 400
    sample_rate: int = 16000
    short_start: bool = False

    def __post_init__(self) -> None:
        stride = self.frame_stride_samples
        if stride < 1 or self.receptive_field_samples < stride:
            raise ConfigError(
                f"frame_stride_samples={stride}, receptive_field_samples={self.receptive_field_samples}; "
                "expected 1 <= stride <= receptive field"
            )
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate={self.sample_rate}; expected a positive integer")
        for field in ("hop_samples", "left_context_samples", "right_context_samples"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0 or value % stride:
                raise ConfigError(
                    f"{field}={value!r}; expected a non-negative multiple of the {stride}-sample "
                    f"frame stride ({stride / self.sample_rate * 1000:g} ms), e.g. {_nearest(value, stride)}"
                )
        if self.hop_samples == 0:
            raise ConfigError(f"hop_samples=0; expected at least one frame ({stride} samples)")

    @classmethod
    def from_seconds(
        cls,
        hop_s: float = DEFAULT_HOP_S,
        left_context_s: float = DEFAULT_LEFT_CONTEXT_S,
        right_context_s: float = DEFAULT_RIGHT_CONTEXT_S,
        *,
        frame_stride_samples: int = 320,
        receptive_field_samples: int = 400,
        sample_rate: int = 16000,
    ) -> WindowerConfig:
        """Build from durations in seconds, each rounded to the nearest frame stride.

        Args:
            hop_s: New audio per window.
            left_context_s: Past context.
            right_context_s: Future context (added latency).
            frame_stride_samples: Model frame stride.
            receptive_field_samples: Model receptive field.
            sample_rate: Sample rate.

        Returns:
            The config.
        """
        stride = frame_stride_samples

        def to_samples(name: str, value_s: float) -> int:
            if not math.isfinite(value_s) or value_s < 0:
                raise ConfigError(f"{name}={value_s!r}; expected a finite number of seconds >= 0")
            return round(value_s * sample_rate / stride) * stride

        return cls(
            hop_samples=to_samples("hop_s", hop_s),
            left_context_samples=to_samples("left_context_s", left_context_s),
            right_context_samples=to_samples("right_context_s", right_context_s),
            frame_stride_samples=stride,
            receptive_field_samples=receptive_field_samples,
            sample_rate=sample_rate,
        )

    @classmethod
    def from_chunk_overlap(
        cls,
        chunk_samples: int = 1600,
        overlap_samples: int = 400,
        *,
        frame_stride_samples: int = 320,
        receptive_field_samples: int = 400,
        sample_rate: int = 16000,
    ) -> WindowerConfig:
        """Express a "chunk + overlap" configuration (the seed's 1600 / 400) exactly.

        ``chunk_samples`` is the new audio per window (the hop). ``overlap_samples`` is how
        many samples consecutive windows share: left context plus the
        ``receptive_field - stride`` samples the last frame of a chunk reaches into the next.
        1600 / 400 is therefore hop 1600 (5 frames, 0.1 s), left context 320, right context 0:
        windows of 2000 samples sharing 400 samples.

        Args:
            chunk_samples: New audio per window, a multiple of the stride.
            overlap_samples: Samples shared by consecutive windows.
            frame_stride_samples: Model frame stride.
            receptive_field_samples: Model receptive field.
            sample_rate: Sample rate.

        Returns:
            The config.

        Raises:
            ConfigError: If the pair cannot be expressed exactly.
        """
        tail = receptive_field_samples - frame_stride_samples
        left = overlap_samples - tail
        if left < 0 or left % frame_stride_samples:
            raise ConfigError(
                f"overlap_samples={overlap_samples}; expected {tail} + a multiple of "
                f"{frame_stride_samples} (e.g. {tail + max(0, _nearest(left, frame_stride_samples))})"
            )
        return cls(
            hop_samples=chunk_samples,
            left_context_samples=left,
            right_context_samples=0,
            frame_stride_samples=frame_stride_samples,
            receptive_field_samples=receptive_field_samples,
            sample_rate=sample_rate,
        )

    @property
    def window_samples(self) -> int:
        """Length of every full window in samples."""
        return (
            self.left_context_samples
            + self.hop_samples
            + self.right_context_samples
            + self.receptive_field_samples
            - self.frame_stride_samples
        )

    @property
    def window_frames(self) -> int:
        """Frames the model emits for one full window."""
        return (self.left_context_samples + self.hop_samples + self.right_context_samples) // (
            self.frame_stride_samples
        )

    @property
    def hop_frames(self) -> int:
        """Core frames per window."""
        return self.hop_samples // self.frame_stride_samples

    @property
    def left_frames(self) -> int:
        """Left-context frames per window."""
        return self.left_context_samples // self.frame_stride_samples

    @property
    def added_latency_s(self) -> float:
        """Delay beyond the hop before a window can run: right context + receptive tail."""
        tail = self.receptive_field_samples - self.frame_stride_samples
        return (self.right_context_samples + tail) / self.sample_rate


def _nearest(value: object, stride: int) -> int:
    try:
        return max(stride, round(float(value) / stride) * stride)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return stride


class Windower:
    """Cuts one stream's audio into fixed-shape overlapping windows (sans-IO, synchronous).

    Args:
        config: Window geometry.
        stream_id: Stream id stamped on each window.
    """

    def __init__(self, config: WindowerConfig, stream_id: str = "0") -> None:
        self.config = config
        self.stream_id = stream_id
        self._buf = np.zeros(0, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget all audio; the next sample pushed is sample 0 of a new stream."""
        self._buf = np.zeros(max(2 * self.config.window_samples, 1024), dtype=np.float32)
        self._buf_start = 0  # stream sample index of self._buf[self._lo]
        self._lo = 0
        self._hi = 0
        self._total = 0
        self._next_index = 0
        self._flushed = False

    @property
    def samples_pushed(self) -> int:
        """Samples received so far."""
        return self._total

    @property
    def frames_emitted(self) -> int:
        """Core frames covered by the windows emitted so far."""
        if self._flushed:
            return num_frames(self._total, self.config.frame_stride_samples, self.config.receptive_field_samples)
        return self._next_index * self.config.hop_frames

    @property
    def buffered_samples(self) -> int:
        """Samples held back for future windows (bounded by about two windows)."""
        return self._hi - self._lo

    def push(self, samples: npt.ArrayLike, now_s: float = 0.0, received_s: float = 0.0) -> list[Window]:
        """Add audio and return the windows it completes.

        Args:
            samples: Mono float audio, shape ``[n]`` (any n, including 0).
            now_s: Clock reading stamped on the windows as ``ready_s``.
            received_s: When this audio was received, stamped as ``received_s``.

        Returns:
            Completed windows, oldest first.

        Raises:
            InvalidAudioError: If the audio is not 1-D, not real, or has NaN/Inf.
            RuntimeError: If called after :meth:`flush` without :meth:`reset`.
        """
        if self._flushed:
            raise RuntimeError("Windower.push after flush(); call reset() to start a new stream")
        x = _as_mono_float32(samples)
        self._append(x)
        out: list[Window] = []
        while True:
            start, core_start = self._window_bounds(self._next_index)
            length = self._length(start, core_start)
            if self._total < start + length:
                break
            out.append(self._cut(start, length, core_start, self.config.hop_frames, now_s, received_s))
            self._next_index += 1
        self._discard_consumed()
        return out

    def flush(self, now_s: float = 0.0, received_s: float = 0.0) -> list[Window]:
        """End the stream: return the last window, holding every frame not yet emitted.

        The window is aligned to the end of the audio (its last frame is the stream's last
        frame). A stream shorter than one window yields one shorter window: the whole stream.

        Args:
            now_s: Clock reading stamped as ``ready_s``.
            received_s: Stamped as ``received_s``.

        Returns:
            Zero or one window (marked ``last``).
        """
        if self._flushed:
            return []
        self._flushed = True
        cfg = self.config
        stride = cfg.frame_stride_samples
        total_frames = num_frames(self._total, stride, cfg.receptive_field_samples)
        first = self._next_index * cfg.hop_frames
        if total_frames <= first:
            return []
        length = min(cfg.window_samples, self._total)
        start = max(0, (self._total - length) // stride * stride)
        return [self._cut(start, length, first, total_frames - first, now_s, received_s, last=True)]

    # -- internals ---------------------------------------------------------------------------

    def _window_bounds(self, index: int) -> tuple[int, int]:
        cfg = self.config
        core_start = index * cfg.hop_frames
        start_frame = max(0, core_start - cfg.left_frames)
        return start_frame * cfg.frame_stride_samples, core_start

    def _length(self, start: int, core_start: int) -> int:
        """Samples of the window starting at ``start``: a full window, or with ``short_start``
        only up to its core's end + right context + receptive tail (a clipped left context)."""
        cfg = self.config
        if not cfg.short_start:
            return cfg.window_samples
        end = (core_start + cfg.hop_frames) * cfg.frame_stride_samples + cfg.right_context_samples
        return min(cfg.window_samples, end + cfg.receptive_field_samples - cfg.frame_stride_samples - start)

    def _cut(
        self,
        start: int,
        length: int,
        core_start: int,
        core_frames: int,
        now_s: float,
        received_s: float,
        last: bool = False,
    ) -> Window:
        lo = self._lo + (start - self._buf_start)
        if lo < self._lo or lo + length > self._hi:  # an internal invariant, not user input
            raise RuntimeError(f"windower lost samples [{start}, {start + length}) (bug)")
        return Window(
            stream_id=self.stream_id,
            index=self._next_index,
            start_sample=start,
            samples=self._buf[lo : lo + length].copy(),
            core_start_frame=core_start,
            core_frames=core_frames,
            ready_s=now_s,
            received_s=received_s,
            last=last,
        )

    def _append(self, x: npt.NDArray[np.float32]) -> None:
        n = x.shape[0]
        if self._hi + n > self._buf.shape[0]:
            held = self._hi - self._lo
            capacity = max(self._buf.shape[0], 2 * (held + n))
            new = np.empty(capacity, dtype=np.float32)
            new[:held] = self._buf[self._lo : self._hi]
            self._buf, self._lo, self._hi = new, 0, held
        self._buf[self._hi : self._hi + n] = x
        self._hi += n
        self._total += n

    def _discard_consumed(self) -> None:
        # Keep what the next window needs, and what a flush window aligned to the end of the
        # audio would need (it may start before the next regular window).
        cfg = self.config
        stride = cfg.frame_stride_samples
        next_start, _ = self._window_bounds(self._next_index)
        tail_start = max(0, (self._total - cfg.window_samples) // stride * stride)
        keep_from = min(next_start, tail_start)
        drop = keep_from - self._buf_start
        if drop > 0:
            self._lo += drop
            self._buf_start += drop


def _as_mono_float32(samples: npt.ArrayLike) -> npt.NDArray[np.float32]:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InvalidAudioError(f"audio shape={x.shape}; expected mono samples of shape [n] (downmix first)")
    if x.dtype.kind != "f":
        raise InvalidAudioError(f"audio dtype={x.dtype}; expected float samples in [-1, 1] (convert PCM first)")
    x = x.astype(np.float32, copy=False)
    if x.size and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise InvalidAudioError(f"audio has non-finite samples (first at offset {bad}: {x[bad]})")
    return x
