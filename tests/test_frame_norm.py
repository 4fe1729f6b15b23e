"""Frame normalisation: per-band noise flooring and the fast running mean (noise robustness)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from server_harness import harmonic_notes

from ostinato.runtime.logmel import LogMel
from ostinato.stream.frame_norm import BandFloor, FrameNormalizer
from ostinato.stream.matcher_config import MatcherConfig

SR = 16000


def _unit(config: MatcherConfig, audio: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    out = LogMel().compute(audio)
    gate, norm = config.activity_gate(), config.frame_normalizer(out.features.frames.shape[1])
    units, acts = [], []
    for i in range(0, len(out), 10):
        active = gate.update(out.energy_db[i : i + 10])
        units.append(norm.normalize(out.features.frames[i : i + 10], active))
        acts.append(active)
    return np.concatenate(units), np.concatenate(acts)


def test_band_floor_flattens_bands_buried_in_noise_and_keeps_peaks() -> None:
    rng = np.random.default_rng(0)
    floor = BandFloor(dim=4, bucket_frames=5, window_buckets=4, margin_db=6.0)
    noise = rng.normal(-60.0, 2.0, size=(40, 4)).astype(np.float32)
    noise[30:, 0] = -20.0  # a sound rises 40 dB above the noise in band 0 only
    out = floor.apply(noise)
    assert np.all(out >= noise)
    late = out[25:30, 1:]
    assert late.std(axis=0).max() < 0.35 * noise[25:30, 1:].std(axis=0).mean()  # noise bands: (nearly) constant in time
    assert np.allclose(out[30:, 0], -20.0)  # the sound passes unchanged
    with pytest.raises(ValueError, match="expected"):
        floor.apply(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="margin_db"):
        BandFloor(4, 5, 4, -1.0)


def test_band_floor_is_independent_of_block_size() -> None:
    x = np.random.default_rng(1).normal(size=(97, 8)).astype(np.float32)
    one = BandFloor(8, 10, 5, 3.0).apply(x)
    f = BandFloor(8, 10, 5, 3.0)
    many = np.concatenate([f.apply(x[i : i + 7]) for i in range(0, 97, 7)])
    assert np.array_equal(one, many)


def test_fast_mean_is_independent_of_block_size_and_skips_inactive_frames() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    active = rng.random(120) > 0.2
    a = FrameNormalizer(16, 16, False, 500.0, 0, False, fast_time_constant_frames=25.0)
    b = FrameNormalizer(16, 16, False, 500.0, 0, False, fast_time_constant_frames=25.0)
    whole = a._remove_fast_mean(a.project(x), active)
    parts = np.concatenate([b._remove_fast_mean(b.project(x[i : i + 9]), active[i : i + 9]) for i in range(0, 120, 9)])
    assert np.allclose(whole, parts, atol=1e-5)
    # A constant offset in every dimension disappears after a few time constants.
    c = FrameNormalizer(16, 16, False, 500.0, 0, False, fast_time_constant_frames=10.0)
    steady = c._remove_fast_mean(np.full((200, 16), 7.0, np.float32), np.ones(200, bool))
    assert np.abs(steady[-1]).max() < 1e-6


def test_noise_that_starts_under_a_repeat_hurts_less_with_the_fast_mean_and_floor() -> None:
    """The same notes heard clean and then under white noise at 5 dB SNR: the frames of the
    two occurrences are more alike with the log-mel defaults than with slow statistics only."""
    rng = np.random.default_rng(3)
    notes = harmonic_notes(4, 3.0)
    lead = harmonic_notes(5, 20.0)
    gap = harmonic_notes(6, 10.0)
    rms = float(np.sqrt(np.mean(notes**2)))
    noisy = notes + rng.standard_normal(notes.size).astype(np.float32) * rms / 10 ** (5 / 20)
    pre = rng.standard_normal(SR).astype(np.float32) * rms / 10 ** (5 / 20)  # noise starts 1 s early
    audio = np.concatenate([lead, notes, gap[:-SR], gap[-SR:] + pre, noisy, lead[:SR]])
    first = len(lead) // 320
    second = (len(lead) + len(notes) + len(gap)) // 320
    n = len(notes) // 320 - 2

    def separation(config: MatcherConfig) -> float:
        u, act = _unit(config, audio)
        ts = np.arange(n)
        ok = act[first + ts] & act[second + ts]
        on = np.einsum("ij,ij->i", u[first + ts[ok]], u[second + ts[ok]]).mean()
        idx = np.nonzero(act[: first - 100])[0]
        off = u[idx[::7]] @ u[second + ts[ok]].T
        return float((on - off.mean()) / off.std())

    tuned = MatcherConfig.for_features("logmel")
    slow_only = MatcherConfig.for_features("logmel", fast_mean_time_constant_s=0.0, band_floor_window_s=0.0)
    assert tuned.fast_mean_time_constant_s > 0 and tuned.band_floor_window_s > 0
    assert separation(tuned) > separation(slow_only) + 0.3


def test_config_validates_new_fields() -> None:
    for bad in ({"fast_mean_time_constant_s": -1.0}, {"band_floor_window_s": -0.5}, {"background_offsets_s": ()}):
        with pytest.raises(ValueError, match="expected"):
            MatcherConfig(**bad)  # type: ignore[arg-type]
    assert MatcherConfig.for_features("wav2vec2").band_floor_window_s == 0.0  # dB features only
