from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ostinato.runtime.audio import load_audio, resample, to_mono
from ostinato.runtime.errors import InputError


def test_load_resamples_and_downmixes(tmp_path: Path) -> None:
    rate = 44100
    t = np.arange(rate) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, left], axis=1).astype(np.float32)
    path = tmp_path / "tone.wav"
    sf.write(path, stereo, rate, subtype="PCM_16")
    audio, file_rate = load_audio(path, 16000)
    assert file_rate == rate
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    # The tone survives resampling: its energy sits at 440 Hz.
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 1


def test_flac_is_read(tmp_path: Path) -> None:
    path = tmp_path / "x.flac"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    audio, _ = load_audio(path)
    assert len(audio) == 1600


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [("absent.wav", None, "does not exist"), ("junk.wav", b"RIFF0000WAVEjunk", "cannot decode")],
)
def test_bad_files(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_audio(path)


def test_empty_and_nonfinite_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="no samples"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        load_audio(nan)


def test_helpers() -> None:
    assert to_mono(np.ones((4, 2), np.float32)).shape == (4,)
    with pytest.raises(InputError, match="shape"):
        to_mono(np.ones((2, 2, 2)))
    x = np.ones(100, np.float32)
    assert resample(x, 16000, 16000) is x
    assert len(resample(x, 8000, 16000)) == 200
    with pytest.raises(InputError, match="positive"):
        resample(x, 0, 16000)
