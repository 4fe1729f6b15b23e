"""Model-free log-mel frame features in numpy, on Wav2Vec2's frame grid.

Frames use the same geometry as Wav2Vec2's convolutional front end: a 400-sample window
every 320 samples at 16 kHz, so frame ``i`` covers samples ``[320 i, 320 i + 400)`` and
``num_frames(n) = floor((n - 400) / 320) + 1``. Log-mel frames and Wav2Vec2 hidden states of
the same audio therefore share frame timing, and the matcher treats them alike.

Two entry points:

* :meth:`LogMel.compute` — offline, a whole signal at once.
* :class:`LogMelStream` — per-stream state across chunks of any size; concatenating its
  outputs equals :meth:`LogMel.compute` of the concatenated input.

Besides the mel frames, every frame carries ``energy_db``: the power of the frame's samples
after removing their mean (so DC offsets read as silence), in dB relative to a full-scale
square wave, floored at ``floor_db``. The matcher's silence gate uses it.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt

from ostinato.runtime.features import Features, frame_starts, num_frames

__all__ = ["LogMel", "LogMelConfig", "LogMelFrames", "LogMelStream", "frame_energy_db"]

OUTPUT_NAME = "logmel"


@dataclasses.dataclass(frozen=True, slots=True)
class LogMelConfig:
    """Log-mel front end settings.

    Args:
        sample_rate: Input rate in Hz (audio at other rates must be resampled first).
        n_mels: Number of mel bands.
        n_fft: FFT size (>= ``window_samples``; the window is zero-padded).
        window_samples: Frame length (Wav2Vec2's receptive field: 400).
        hop_samples: Frame stride (Wav2Vec2's: 320).
        f_min_hz: Lowest mel band edge.
        f_max_hz: Highest mel band edge (<= sample_rate / 2).
        floor_db: Floor of both mel powers and frame energy, so that digital silence gives
            one constant frame instead of ``-inf``.
    """

    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 512
    window_samples: int = 400
    hop_samples: int = 320
    f_min_hz: float = 60.0
    f_max_hz: float = 7600.0
    floor_db: float = -100.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate={self.sample_rate}; expected > 0")
        if not 1 <= self.n_mels <= 256:
            raise ValueError(f"n_mels={self.n_mels}; expected 1..256")
        if self.window_samples <= 0 or self.hop_samples <= 0:
            raise ValueError(
                f"window_samples={self.window_samples}, hop_samples={self.hop_samples}; expected > 0"
            )
        if self.n_fft < self.window_samples:
            raise ValueError(f"n_fft={self.n_fft}; expected >= window_samples={self.window_samples}")
        if not 0.0 <= self.f_min_hz < self.f_max_hz <= self.sample_rate / 2:
            raise ValueError(
                f"f_min_hz={self.f_min_hz}, f_max_hz={self.f_max_hz}; expected "
                f"0 <= f_min_hz < f_max_hz <= {self.sample_rate / 2}"
            )


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class LogMelFrames:
    """Log-mel frames plus per-frame loudness.

    Args:
        features: ``[T, n_mels]`` log-mel power in dB with exact frame positions.
        energy_db: ``[T]`` float32 DC-removed frame power in dB (full-scale square = 0 dB).
    """

    features: Features
    energy_db: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.features)


def _hz_to_mel(freq_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + freq_hz / 700.0)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)  # keyed by the frozen config: a pure function of it
def _filterbank(config: LogMelConfig) -> npt.NDArray[np.float32]:
    """``[n_fft // 2 + 1, n_mels]`` triangular HTK-mel filters."""
    n_bins = config.n_fft // 2 + 1
    bin_hz = np.arange(n_bins) * config.sample_rate / config.n_fft
    edges_mel = np.linspace(
        _hz_to_mel(np.array(config.f_min_hz)), _hz_to_mel(np.array(config.f_max_hz)), config.n_mels + 2
    )
    edges_hz = _mel_to_hz(edges_mel)
    bank = np.zeros((n_bins, config.n_mels), dtype=np.float64)
    for m in range(config.n_mels):
        lo, mid, hi = edges_hz[m], edges_hz[m + 1], edges_hz[m + 2]
        rising = (bin_hz - lo) / max(mid - lo, 1e-9)
        falling = (hi - bin_hz) / max(hi - mid, 1e-9)
        bank[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return bank.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _window(window_samples: int) -> npt.NDArray[np.float32]:
    return np.hanning(window_samples + 1)[:-1].astype(np.float32)


def _frame_view(audio: npt.NDArray[np.float32], window: int, hop: int) -> npt.NDArray[np.float32]:
    count = num_frames(int(audio.shape[0]), window, hop)
    if count == 0:
        return np.zeros((0, window), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(audio, window)[::hop]
    return view[:count]


def frame_energy_db(
    audio: npt.NDArray[np.float32],
    window_samples: int = 400,
    hop_samples: int = 320,
    floor_db: float = -100.0,
) -> npt.NDArray[np.float32]:
    """DC-removed power of each frame in dB, on the same grid as the features.

    Args:
        audio: Mono float32 samples.
        window_samples: Frame length.
        hop_samples: Frame stride.
        floor_db: Lowest value returned (digital silence).

    Returns:
        ``[num_frames(len(audio))]`` float32.
    """
    frames = _frame_view(np.asarray(audio, dtype=np.float32), window_samples, hop_samples)
    if frames.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    power = frames.astype(np.float64).var(axis=1)
    floor = 10.0 ** (floor_db / 10.0)
    db: npt.NDArray[np.float32] = (10.0 * np.log10(np.maximum(power, floor))).astype(np.float32)
    return db


class LogMel:
    """Stateless log-mel extractor (thread-safe; share one per process).

    Args:
        config: Front end settings.
    """

    def __init__(self, config: LogMelConfig | None = None) -> None:
        self.config = config if config is not None else LogMelConfig()
        self._bank = _filterbank(self.config)
        self._window = _window(self.config.window_samples)

    @property
    def dim(self) -> int:
        """Feature dimension (``n_mels``)."""
        return self.config.n_mels

    def num_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` of audio."""
        return num_frames(n_samples, self.config.window_samples, self.config.hop_samples)

    def compute(
        self, audio: npt.NDArray[np.floating], first_frame: int = 0, stream: str = ""
    ) -> LogMelFrames:
        """Log-mel frames of a whole signal.

        Args:
            audio: Mono samples at ``config.sample_rate`` (``[n]``).
            first_frame: Global index of the first frame (for positions of later chunks).
            stream: Stream identifier stored in the result.

        Returns:
            Frames and per-frame energy.

        Raises:
            ValueError: ``audio`` is not 1-D or holds NaN/Inf.
        """
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"audio has shape {x.shape}; expected mono [samples]")
        if x.size and not np.isfinite(x).all():
            raise ValueError("audio holds NaN/Inf samples; expected finite float samples")
        cfg = self.config
        frames = _frame_view(x, cfg.window_samples, cfg.hop_samples)
        count = int(frames.shape[0])
        if count:
            centred = frames - frames.mean(axis=1, keepdims=True)
            spectrum = np.fft.rfft(centred * self._window, n=cfg.n_fft, axis=1)
            power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
            mel = power @ self._bank
            floor = np.float32(10.0 ** (cfg.floor_db / 10.0))
            logmel = (10.0 * np.log10(np.maximum(mel, floor))).astype(np.float32)
        else:
            logmel = np.zeros((0, cfg.n_mels), dtype=np.float32)
        energy = frame_energy_db(x, cfg.window_samples, cfg.hop_samples, cfg.floor_db)
        features = Features(
            frames=logmel,
            start_samples=frame_starts(first_frame, count, cfg.hop_samples),
            sample_rate=cfg.sample_rate,
            output=OUTPUT_NAME,
            stream=stream,
        )
        return LogMelFrames(features=features, energy_db=energy)


class LogMelStream:
    """Per-stream log-mel state: push chunks of any length, get the frames they complete.

    Keeps the samples of the next, not yet complete frame between calls (at most
    ``window_samples + hop_samples`` samples), so the output is independent of how the audio
    was chunked.

    Args:
        extractor: Shared extractor.
        stream: Stream identifier stored in the results.
    """

    def __init__(self, extractor: LogMel | None = None, stream: str = "") -> None:
        self.extractor = extractor if extractor is not None else LogMel()
        self.stream = stream
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_frame = 0

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far (the global index of the next frame)."""
        return self._next_frame

    def push(self, chunk: npt.NDArray[np.floating]) -> LogMelFrames:
        """Add samples; return the frames they complete (possibly none).

        Raises:
            ValueError: ``chunk`` is not 1-D or holds NaN/Inf.
        """
        x = np.asarray(chunk, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"chunk has shape {x.shape}; expected mono [samples]")
        buffer = np.concatenate([self._pending, x]) if self._pending.size else x
        out = self.extractor.compute(buffer, first_frame=self._next_frame, stream=self.stream)
        count = len(out)
        self._next_frame += count
        self._pending = buffer[count * self.extractor.config.hop_samples :].copy()
        return out

    def reset(self) -> None:
        """Forget buffered samples and restart frame numbering at 0."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_frame = 0
