"""Second-stage verification: pair evidence on raw log-mel frames with symmetric noise flooring,
and the loud-frame mismatch test."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from server_harness import harmonic_notes
from test_matcher import _speak

from ostinato.runtime.logmel import LogMel
from ostinato.stream.frame_ring import FrameRing
from ostinato.stream.matcher_config import MatcherConfig
from ostinato.stream.verify import floor_difference, loud_mismatch, pair_accepted, pair_evidence, short_pair_accepted

SR = 16000
CONFIG = MatcherConfig.for_features("logmel")
OFFSETS = tuple(CONFIG.frames(o) * s for o in CONFIG.background_offsets_s for s in (-1, 1))


def _ring(audio: npt.NDArray[np.float32]) -> FrameRing:
    out = LogMel().compute(audio)
    ring = FrameRing(len(out), out.features.frames.shape[1])
    ring.write(out.features.frames, out.energy_db > -60)
    return ring


def _pair(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32], gap_s: float = 1.0) -> tuple[FrameRing, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    audio = np.concatenate([np.zeros(int(0.5 * SR), np.float32), first, np.zeros(int(gap_s * SR), np.float32), second])
    ring = _ring(audio)
    lag = CONFIG.frames(first.size / SR + gap_s)
    ts = np.arange(CONFIG.frames(0.5 + first.size / SR + gap_s), ring.end - 2, dtype=np.int64)
    return ring, ts, np.full(ts.size, lag, np.int64)


def _evidence(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32], gap_s: float = 1.0) -> float:
    return pair_evidence(*_pair(first, second, gap_s), OFFSETS, CONFIG.verify_coefficients, CONFIG.verify_margin_db)


def _mismatch(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]) -> float:
    return loud_mismatch(*_pair(first, second), CONFIG.verify_margin_db, CONFIG.verify_loud_db)


def test_noisy_repeat_passes_and_a_same_timbre_look_alike_does_not() -> None:
    assert CONFIG.verify_min_evidence is not None
    clip = harmonic_notes(1, 2.0)
    rng = np.random.default_rng(0)
    rms = float(np.sqrt(np.mean(clip**2)))
    noisy = (0.7 * clip + rng.standard_normal(clip.size).astype(np.float32) * rms * 0.7 * 10 ** (-10 / 20)).astype(np.float32)
    repeat = _evidence(clip, noisy)
    look_alike = _evidence(clip, harmonic_notes(2, 2.0))
    assert repeat >= 1.5 * CONFIG.verify_min_evidence
    assert look_alike < 0.5 * CONFIG.verify_min_evidence
    # Longer pairs that keep aligning are stronger evidence.
    assert _evidence(harmonic_notes(3, 4.0), harmonic_notes(3, 4.0)) > _evidence(harmonic_notes(3, 2.0), harmonic_notes(3, 2.0))


def test_too_few_frames_are_not_verified() -> None:
    ring = _ring(harmonic_notes(4, 3.0))
    ts = np.arange(100, 105, dtype=np.int64)
    assert np.isnan(pair_evidence(ring, ts, np.full(ts.size, 60), OFFSETS, 40, 10.0))
    assert np.isnan(loud_mismatch(ring, ts, np.full(ts.size, 60), 10.0, 6.0))


def test_verification_is_on_for_logmel_only() -> None:
    assert MatcherConfig.for_features("logmel").verify_min_evidence is not None
    assert MatcherConfig.for_features("wav2vec2").verify_min_evidence is None


def test_a_changed_word_in_the_same_voice_is_a_loud_mismatch_and_noise_is_not() -> None:
    limit = CONFIG.verify_max_mismatch
    assert limit is not None and CONFIG.verify_min_evidence is not None
    phrase = _speak("silver morning market station window garden")
    rms = float(np.sqrt(np.mean(phrase**2)))
    rng = np.random.default_rng(0)
    for snr_db in (10.0, 5.0):  # noise lowers the similarity where the repeat is near its floor
        noisy = (phrase + rng.standard_normal(phrase.size).astype(np.float32) * rms * 10 ** (-snr_db / 20)).astype(np.float32)
        assert _mismatch(phrase, noisy) <= 0.5 * limit
        assert _evidence(phrase, noisy) >= CONFIG.verify_min_evidence
    # One word changed ("market" -> "basket"), same voice and speed: the pair contrast passes
    # it (shared words at one lag), the frames loud in both occurrences do not all match.
    look_alike = _speak("silver morning basket station window garden")[: phrase.size]
    assert _evidence(phrase, look_alike) >= CONFIG.verify_min_evidence
    assert _mismatch(phrase, look_alike) > limit


def test_mismatch_test_is_on_for_logmel_only_and_validated() -> None:
    assert MatcherConfig.for_features("logmel").verify_max_mismatch is not None
    assert MatcherConfig.for_features("wav2vec2").verify_max_mismatch is None
    with pytest.raises(ValueError, match="verify_max_mismatch"):
        MatcherConfig(verify_max_mismatch=1.5)
    with pytest.raises(ValueError, match="verify_loud_db"):
        MatcherConfig(verify_loud_db=-1.0)


def test_pair_decision_full_evidence_or_aligned_pair() -> None:
    c = CONFIG
    assert c.verify_min_evidence == 0.6 and c.verify_aligned_evidence == 0.45 and c.verify_max_mismatch == 0.1
    # Full evidence: the loud-mismatch limit applies.
    assert pair_accepted(c, 0.7, 0.1, 0.5)
    assert not pair_accepted(c, 0.7, 0.11, 1.0)
    # Lower evidence: only an aligned pair (activity >= 0.9, loud mismatches <= 2 %).
    assert pair_accepted(c, 0.5, 0.0, 0.95)
    assert not pair_accepted(c, 0.5, 0.0, 0.85)  # pauses do not line up
    assert not pair_accepted(c, 0.5, 0.05, 0.95)  # a loud frame mismatches
    assert not pair_accepted(c, 0.4, 0.0, 1.0)  # below the aligned evidence
    assert not pair_accepted(c, float("nan"), 0.0, 1.0)
    # Aligned pairs off: the plain rule.
    plain = MatcherConfig.for_features("logmel", verify_aligned_evidence=None)
    assert not pair_accepted(plain, 0.5, 0.0, 1.0)
    assert pair_accepted(MatcherConfig.for_features("wav2vec2"), float("nan"), 1.0, 0.0)  # no verification


def test_buried_repeat_passes_as_an_aligned_pair_and_a_look_alike_does_not() -> None:
    # 1.4 s of a phrase repeated under white noise 8 dB *louder* than it: the pair evidence
    # falls below verify_min_evidence, but the pair stays aligned (pauses line up, no loud frame
    # mismatches); a look-alike with two words changed, same voice, is rejected either way.
    phrase = _speak("silver morning market station")[: int(1.4 * SR)]
    rms = float(np.sqrt(np.mean(phrase**2)))
    plain = MatcherConfig.for_features("logmel", verify_aligned_evidence=None)

    def judged(second: npt.NDArray[np.float32]) -> tuple[float, bool, bool]:
        ring, ts, lags = _pair(phrase, second)
        evidence = pair_evidence(ring, ts, lags, OFFSETS, CONFIG.verify_coefficients, CONFIG.verify_margin_db)
        mismatch = loud_mismatch(ring, ts, lags, CONFIG.verify_margin_db, CONFIG.verify_loud_db)
        activity = float((ring.take(ts)[1] & ring.take(ts - lags)[1]).mean())
        return evidence, pair_accepted(plain, evidence, mismatch, activity), pair_accepted(CONFIG, evidence, mismatch, activity)

    for seed in range(4):
        rng = np.random.default_rng(seed)
        noisy = (phrase + rng.standard_normal(phrase.size).astype(np.float32) * rms * 10 ** (8 / 20)).astype(np.float32)
        evidence, by_plain, by_aligned = judged(noisy)
        assert evidence < 0.6 and not by_plain and by_aligned, (seed, evidence)
    evidence, by_plain, by_aligned = judged(_speak("paper morning rocket station")[: phrase.size])
    assert not by_plain and not by_aligned, evidence


def test_aligned_pair_settings_are_validated() -> None:
    assert MatcherConfig.for_features("wav2vec2").verify_aligned_evidence is None
    with pytest.raises(ValueError, match="verify_aligned_activity"):
        MatcherConfig(verify_aligned_activity=1.5)


def test_floor_difference_tells_a_repeat_in_new_noise_from_one_at_another_gain_or_a_look_alike() -> None:
    # Only a pair heard in different noise may be reported shorter than min_pattern_s
    # (short_noisy_pattern_s): noise breaks a repeat into pieces where it buries a word; a
    # hard negative heard in the same conditions leaves pieces just as short.
    phrase = _speak("silver morning market station window garden")
    rng = np.random.default_rng(3)
    rms = float(np.sqrt(np.mean(phrase**2)))
    noisy = (phrase + rng.standard_normal(phrase.size).astype(np.float32) * rms * 10 ** (-10 / 20)).astype(np.float32)
    quieter = (phrase * 10 ** (-12 / 20)).astype(np.float32)
    hard_negative = _speak("paper morning rocket station candle garden")
    assert floor_difference(*_pair(phrase, noisy)) >= 2 * CONFIG.noisy_floor_db
    assert floor_difference(*_pair(phrase, quieter)) < 0.25 * CONFIG.noisy_floor_db  # gain is not noise
    assert floor_difference(*_pair(phrase, hard_negative)) < 0.5 * CONFIG.noisy_floor_db


def test_short_pair_decision_needs_different_noise_alignment_and_full_evidence() -> None:
    c = CONFIG
    assert c.verify_min_evidence is not None and c.short_noisy_pattern_s is not None
    ok = {"evidence": c.verify_min_evidence, "mismatch": 0.0, "activity": 1.0, "noise_db": c.noisy_floor_db}
    assert short_pair_accepted(c, **ok)
    for name, value in (("evidence", 0.59), ("mismatch", 0.03), ("activity", 0.85), ("noise_db", 5.9)):
        assert not short_pair_accepted(c, **{**ok, name: value}), name
    assert not short_pair_accepted(MatcherConfig.for_features("logmel", short_noisy_pattern_s=None), **ok)
    assert MatcherConfig.for_features("wav2vec2").short_noisy_pattern_s is None
    with pytest.raises(ValueError, match="short_noisy_pattern_s"):
        MatcherConfig.for_features("logmel", short_noisy_pattern_s=1.5)
    with pytest.raises(ValueError, match="short_noisy_pattern_s"):
        MatcherConfig(short_noisy_pattern_s=0.9)  # no verification


def _band(audio: npt.NDArray[np.float32], lo_hz: float, hi_hz: float, keep: bool = True) -> npt.NDArray[np.float32]:
    spec = np.fft.rfft(audio)
    freq = np.fft.rfftfreq(audio.size, 1 / SR)
    inside = (freq >= lo_hz) & (freq <= hi_hz)
    spec[~inside if keep else inside] = 0
    return np.fft.irfft(spec, audio.size).astype(np.float32)


def test_a_band_missing_at_the_spectrum_edge_of_one_occurrence_drops_out() -> None:
    # A telephone line or a low-rate codec removes the top (and bottom) of the spectrum of one
    # occurrence: those bands are left out of the comparison instead of counting as a
    # difference. The repeat low-passed at 3.4 kHz keeps >= 90 % of the evidence of the
    # unaltered repeat (comparing all bands: 84-85 %); a band cut out of the middle of the
    # spectrum still counts.
    rng = np.random.default_rng(0)

    def bed(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (audio + rng.standard_normal(audio.size).astype(np.float32) * 0.001).astype(np.float32)

    for text in ("silver morning market station window garden", "the quiet harbor opens before morning"):
        phrase = _speak(text)
        same = _evidence(bed(phrase), bed(phrase))
        low_passed = _evidence(bed(phrase), bed(_band(phrase, 0, 3400)))
        notched = _evidence(bed(phrase), bed(_band(phrase, 1000, 2000, keep=False)))
        assert low_passed >= 0.9 * same, (text, low_passed, same)
        assert notched < low_passed, (text, notched, low_passed)
        assert _mismatch(bed(phrase), bed(_band(phrase, 300, 3400))) <= 0.02
