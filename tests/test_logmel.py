"""Log-mel front end: Wav2Vec2 frame grid, streaming equals offline, silence and DC."""

from __future__ import annotations

import numpy as np
import pytest

from ostinato.runtime.features import num_frames
from ostinato.runtime.logmel import LogMel, LogMelConfig, LogMelStream, frame_energy_db


def test_frames_follow_the_wav2vec2_grid() -> None:
    audio = np.random.default_rng(0).standard_normal(16000 + 123).astype(np.float32) * 0.1
    out = LogMel().compute(audio, first_frame=5, stream="s")
    assert len(out) == num_frames(audio.size) == (audio.size - 400) // 320 + 1
    assert out.features.frames.shape == (len(out), 64) and out.features.frames.dtype == np.float32
    assert (out.features.start_samples == 320 * (5 + np.arange(len(out)))).all()
    assert out.features.output == "logmel" and out.features.stream == "s"
    assert LogMel().compute(np.zeros(399, np.float32)).features.frames.shape == (0, 64)


def test_streaming_equals_offline_for_any_chunking() -> None:
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(3 * 16000) * np.sin(np.arange(3 * 16000) / 900.0)).astype(np.float32)
    offline = LogMel().compute(audio)
    stream = LogMelStream()
    frames, energy, starts = [], [], []
    i = 0
    while i < audio.size:
        n = int(rng.integers(1, 2500))
        out = stream.push(audio[i : i + n])
        frames.append(out.features.frames)
        energy.append(out.energy_db)
        starts.append(out.features.start_samples)
        i += n
    np.testing.assert_allclose(np.concatenate(frames), offline.features.frames, atol=1e-4)
    np.testing.assert_allclose(np.concatenate(energy), offline.energy_db, atol=1e-4)
    assert (np.concatenate(starts) == offline.features.start_samples).all()
    assert stream.frames_emitted == len(offline)


def test_silence_and_dc_read_as_the_floor() -> None:
    cfg = LogMelConfig()
    zeros = LogMel(cfg).compute(np.zeros(8000, np.float32))
    assert np.all(zeros.features.frames == cfg.floor_db) and np.all(zeros.energy_db == cfg.floor_db)
    dc = LogMel(cfg).compute(np.full(8000, 0.5, np.float32))
    assert np.all(dc.energy_db == cfg.floor_db)  # DC removed per frame
    tone = np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000).astype(np.float32)
    assert frame_energy_db(tone)[0] == pytest.approx(10 * np.log10(0.5), abs=0.2)
    gain = LogMel(cfg).compute(tone * 0.1).features.frames - LogMel(cfg).compute(tone).features.frames
    loud = LogMel(cfg).compute(tone).features.frames > -60
    np.testing.assert_allclose(gain[loud], -20.0, atol=0.05)  # a gain is a constant shift in dB


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="mono"):
        LogMel().compute(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        LogMel().compute(np.full(1000, np.nan, np.float32))
    with pytest.raises(ValueError, match="n_fft"):
        LogMelConfig(n_fft=256)
    with pytest.raises(ValueError, match="f_max_hz"):
        LogMelConfig(f_max_hz=9000.0)
