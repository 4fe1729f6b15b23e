"""StreamResampler: chunking-invariant soxr resampling, downmix, passthrough, errors."""

from __future__ import annotations

import numpy as np
import pytest

from ostinato.stream.errors import ConfigError, InvalidAudioError
from ostinato.stream.resample import StreamResampler, downmix


def _stream(resampler: StreamResampler, audio: np.ndarray, block: int) -> np.ndarray:
    parts = [resampler.push(audio[i : i + block]) for i in range(0, len(audio), block)]
    return np.concatenate(parts + [resampler.flush()])


def test_passthrough_is_bit_exact() -> None:
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    r = StreamResampler(16000)
    assert r.passthrough
    assert np.array_equal(_stream(r, x, 333), x)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_sine_keeps_frequency_and_length(rate: int) -> None:
    t = np.arange(rate * 2) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = _stream(StreamResampler(rate), x, 1024)
    assert abs(len(y) - 32000) <= 1
    spectrum = np.abs(np.fft.rfft(y[2000:-2000] * np.hanning(len(y) - 4000)))
    peak_hz = np.argmax(spectrum) * 16000 / (len(y) - 4000)
    assert abs(peak_hz - 440) < 2
    # Streaming equals one-shot soxr up to float rounding: block boundaries leave no seams.
    import soxr

    ref = soxr.resample(x, rate, 16000, quality="HQ")
    n = min(len(ref), len(y))
    assert np.max(np.abs(ref[:n] - y[:n])) < 1e-4


def test_downmix_averages_channels() -> None:
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1).astype(np.float32)
    assert np.allclose(downmix(stereo, 2), 0.25)
    r = StreamResampler(16000, channels=2)
    assert np.allclose(r.push(stereo), 0.25)
    with pytest.raises(InvalidAudioError, match="expected \\[n, 2\\]"):
        r.push(np.zeros((10, 3), dtype=np.float32))
    with pytest.raises(InvalidAudioError, match="NaN"):
        r.push(np.full((4, 2), np.inf, dtype=np.float32))
    with pytest.raises(InvalidAudioError, match="dtype"):
        downmix(np.zeros(4, dtype=np.int16), 1)


def test_invalid_options() -> None:
    with pytest.raises(ConfigError, match="in_rate"):
        StreamResampler(10)
    with pytest.raises(ConfigError, match="channels"):
        StreamResampler(16000, channels=0)
    with pytest.raises(ConfigError, match="quality"):
        StreamResampler(44100, quality="best")
    r = StreamResampler(44100)
    r.flush()
    with pytest.raises(RuntimeError):
        r.push(np.zeros(4, dtype=np.float32))
