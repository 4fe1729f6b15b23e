"""Kaldi log-mel filterbank in numpy: GAMA's audio front end without torch.

Reproduces what GAMA's inference scripts do (``gama_inf.py:165-184``)::

    wav = wav - wav.mean()
    fbank = torchaudio.compliance.kaldi.fbank(wav, htk_compat=True, sample_frequency=16000,
        use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)
    fbank = pad_or_truncate(fbank, 1024)       # zeros appended in the log domain
    fbank = (fbank + 5.081) / 4.4849

Kaldi defaults that apply: 25 ms (400-sample) frames zero-padded to a 512-point FFT,
``snip_edges=True``, per-frame DC removal, pre-emphasis 0.97, power spectrum, mel bins between
20 Hz and Nyquist on the HTK mel scale ``1127 ln(1 + f/700)``, log floored at float32 epsilon.
Checked against ``kaldi-native-fbank`` in ``tests/test_fbank.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

__all__ = [
    "FBANK_MEAN",
    "FBANK_STD",
    "FRAME_LENGTH_SAMPLES",
    "FRAME_SHIFT_SAMPLES",
    "NUM_MEL_BINS",
    "SAMPLE_RATE",
    "TARGET_FRAMES",
    "gama_features",
    "kaldi_fbank",
    "mel_banks",
    "num_frames",
]

SAMPLE_RATE = 16000
FRAME_LENGTH_SAMPLES = 400
FRAME_SHIFT_SAMPLES = 160
NUM_MEL_BINS = 128
TARGET_FRAMES = 1024
FBANK_MEAN = -5.081
FBANK_STD = 4.4849
_FFT_SIZE = 512
_PREEMPH = 0.97
_LOW_FREQ_HZ = 20.0
_LOG_FLOOR = float(np.finfo(np.float32).eps)


def num_frames(num_samples: int) -> int:
    """Frames Kaldi produces with ``snip_edges=True``: ``1 + (N - 400) // 160`` (0 if N < 400)."""
    if num_samples < FRAME_LENGTH_SAMPLES:
        return 0
    return 1 + (num_samples - FRAME_LENGTH_SAMPLES) // FRAME_SHIFT_SAMPLES


def _mel(freq_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1127.0 * np.log1p(freq_hz / 700.0)


@functools.lru_cache(maxsize=4)
def mel_banks(num_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float64]:
    """Kaldi triangular mel filters as ``[FFT/2 + 1, num_bins]`` (the Nyquist row is zero).

    The result is cached and read-only.
    """
    half = _FFT_SIZE // 2
    mel_low, mel_high = _mel(np.array(_LOW_FREQ_HZ)), _mel(np.array(sample_rate / 2.0))
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + np.arange(num_bins)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    mel = _mel(sample_rate / _FFT_SIZE * np.arange(half, dtype=np.float64))[None, :]
    up, down = (mel - left) / (center - left), (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))  # [num_bins, half]
    out = np.zeros((half + 1, num_bins))
    out[:half] = banks.T
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=1)
def _window() -> npt.NDArray[np.float64]:
    n = np.arange(FRAME_LENGTH_SAMPLES)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH_SAMPLES - 1))  # symmetric Hann
    win.setflags(write=False)
    return win


def kaldi_fbank(
    waveform: npt.NDArray[np.floating], num_mel_bins: int = NUM_MEL_BINS
) -> npt.NDArray[np.float32]:
    """Log-mel filterbank of 16 kHz mono audio, ``[num_frames(N), num_mel_bins]`` float32.

    With 128 bins on a 512-point FFT a few of the lowest mel filters cover no FFT bin: Kaldi
    (and kaldi-native-fbank) refuse that configuration, torchaudio — which GAMA used — keeps
    them as all-zero filters whose log energy is the floor, log(1.19e-7) = -15.94. So do we.

    Args:
        waveform: 1-D samples at 16 kHz, any float scale (GAMA feeds [-1, 1]).
        num_mel_bins: Mel filters (GAMA: 128).

    Raises:
        ValueError: ``waveform`` is not 1-D.
    """
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"waveform has shape {x.shape}; expected 1-D mono samples")
    n = num_frames(x.shape[0])
    if n == 0:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH_SAMPLES)[::FRAME_SHIFT_SAMPLES][:n]
    frames = frames - frames.mean(axis=1, keepdims=True)
    shifted = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - _PREEMPH * shifted) * _window()
    power = np.abs(np.fft.rfft(frames, n=_FFT_SIZE, axis=1)) ** 2
    energies = power @ mel_banks(num_mel_bins)
    return np.log(np.maximum(energies, _LOG_FLOOR)).astype(np.float32)


def gama_features(
    waveform: npt.NDArray[np.floating], target_frames: int = TARGET_FRAMES
) -> npt.NDArray[np.float32]:
    """GAMA's model input: mean-removed, fbank, padded/truncated, normalised → ``[T, 128]``.

    Args:
        waveform: 1-D samples at 16 kHz.
        target_frames: Fixed length (1024 frames = 10.24 s); shorter input is zero-padded in
            the log domain (padded rows read 1.1329 after normalisation, as upstream), longer
            input is truncated.
    """
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"waveform has shape {x.shape}; expected 1-D mono samples")
    fbank = kaldi_fbank(x - x.mean() if x.size else x)
    out = np.zeros((target_frames, NUM_MEL_BINS), dtype=np.float32)
    keep = min(target_frames, fbank.shape[0])
    out[:keep] = fbank[:keep]
    return ((out - FBANK_MEAN) / FBANK_STD).astype(np.float32)
