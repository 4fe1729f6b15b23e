"""PatternMatcher on synthetic streams: exact times, tempo, silence gate, memory bound, edges."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
import soxr

from ostinato.runtime.logmel import LogMel, LogMelStream
from ostinato.stream.events import MatchEvent, NoveltyEvent
from ostinato.stream.matcher import FeatureBlock, MatcherConfig, MatcherInputError, PatternMatcher

SR = 16000
CONFIG = MatcherConfig.for_features("logmel")


def _filler(duration_s: float, seed: int) -> npt.NDArray[np.float32]:
    """Never-repeating filler: 60–250 ms bursts of noise with random spectral shapes and
    random harmonic notes, with short pauses."""
    rng = np.random.default_rng(seed)
    out: list[npt.NDArray[np.float32]] = []
    total = 0
    while total < duration_s * SR:
        n = int(rng.uniform(0.06, 0.25) * SR)
        if rng.random() < 0.5:
            spec = np.fft.rfft(rng.standard_normal(n))
            lo, width = rng.uniform(0, 0.8), rng.uniform(0.02, 0.3)
            f = np.linspace(0, 1, spec.size)
            spec *= np.exp(-(((f - lo) / width) ** 2))
            burst = np.fft.irfft(spec, n)
        else:
            t = np.arange(n) / SR
            f0 = rng.uniform(100, 900)
            burst = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 6))
        burst = burst / (np.abs(burst).max() + 1e-9) * rng.uniform(0.1, 0.4) * np.hanning(n)
        out.append(burst.astype(np.float32))
        total += n
        if rng.random() < 0.3:
            out.append(np.zeros(int(rng.uniform(0.02, 0.1) * SR), np.float32))
            total += out[-1].size
    return np.concatenate(out)[: int(duration_s * SR)]


def _jingle(seed: int, duration_s: float = 2.0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    parts = []
    while sum(len(p) for p in parts) < duration_s * SR:
        n = int(rng.choice([0.12, 0.2, 0.3]) * SR)
        t = np.arange(n) / SR
        f0 = 220 * 2 ** (rng.integers(0, 14) / 12)
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k**1.3 for k in range(1, 7))
        parts.append((0.3 * tone * np.exp(-t * 4) * np.minimum(1, t / 0.01)).astype(np.float32))
    return np.concatenate(parts)[: int(duration_s * SR)]


def _run(audio: npt.NDArray[np.float32], config: MatcherConfig = CONFIG, block_frames: int = 10) -> list:  # type: ignore[type-arg]
    lm = LogMel().compute(audio)
    m = PatternMatcher(config, stream="t")
    events = []
    x, e = lm.features.frames, lm.energy_db
    for i in range(0, len(x), block_frames):
        events += m.push(FeatureBlock(x[i : i + block_frames], e[i : i + block_frames]))
    return events + m.flush()


def _place(base: npt.NDArray[np.float32], clip: npt.NDArray[np.float32], at_s: float) -> None:
    i = int(at_s * SR)
    base[i : i + clip.size] = clip


def _matches(events: list) -> list[MatchEvent]:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, MatchEvent)]


def test_exact_repeat_is_found_with_exact_times() -> None:
    audio = _filler(20.0, 1)
    pattern = _jingle(7, 2.0)
    _place(audio, pattern, 3.0)
    _place(audio, pattern, 12.0)
    events = _matches(_run(audio))
    assert len(events) == 1, events
    e = events[0]
    assert abs(e.start_s - 12.0) <= 0.1 and abs(e.end_s - 14.0) <= 0.1, e
    assert abs(e.first_start_s - 3.0) <= 0.1 and abs(e.first_end_s - 5.0) <= 0.1, e
    assert 0.9 <= e.score <= 1.0
    assert 0.0 <= e.detected_at_s - e.end_s <= 0.8  # detected within 0.8 s of the repeat's end


def test_non_repeating_audio_is_not_flagged() -> None:
    assert _matches(_run(_filler(60.0, 2))) == []


def test_three_occurrences_keep_one_pattern_id() -> None:
    audio = _filler(32.0, 3)
    pattern = _jingle(8, 2.0)
    for at in (2.0, 12.0, 24.0):
        _place(audio, pattern, at)
    events = _matches(_run(audio))
    assert [round(e.start_s) for e in events] == [12, 24]
    assert len({e.pattern_id for e in events}) == 1
    assert all(abs(e.first_start_s - 2.0) <= 0.1 for e in events)


def _tempo(audio: npt.NDArray[np.float32], factor: float) -> npt.NDArray[np.float32]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "a.wav", Path(tmp) / "b.wav"
        sf.write(src, audio, SR, subtype="FLOAT")
        subprocess.run(["sox", "-V1", str(src), str(dst), "tempo", "-m", f"{factor}"], check=True)
        out, _ = sf.read(dst, dtype="float32")
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("factor", [0.95, 1.05])
def test_tempo_shifted_repeat_is_found(factor: float) -> None:
    audio = _filler(20.0, 4)
    pattern = _jingle(9, 2.5)
    _place(audio, pattern, 2.0)
    shifted = _tempo(pattern, factor) * 0.5  # and -6 dB
    _place(audio, shifted, 11.0)
    events = _matches(_run(audio))
    assert len(events) == 1, events
    e = events[0]
    end = 11.0 + shifted.size / SR
    overlap = min(e.end_s, end) - max(e.start_s, 11.0)
    # sox's time stretch repeats/drops short segments, so the best lag jumps: the reported
    # span may stop short of the end (docs/matcher.md, limits); the evaluation's criterion
    # (half of the repeat covered) must hold.
    assert overlap >= 0.5 * (end - 11.0), e
    assert abs(e.start_s - 11.0) <= 0.15


def _speak(text: str) -> npt.NDArray[np.float32]:
    """espeak-ng speech at 16 kHz, trimmed, at -20 dBFS RMS (the evaluation's voices)."""
    if shutil.which("espeak-ng") is None:  # a setup dependency: missing means a broken setup, not a skip
        pytest.fail("espeak-ng not found; run `make setup` (scripts/setup-system.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True)
        audio, rate = sf.read(wav, dtype="float32")
    audio = soxr.resample(audio, rate, SR).astype(np.float32)
    voiced = np.nonzero(np.abs(audio) > 1e-3)[0]
    audio = audio[voiced[0] : voiced[-1] + 1]
    return (audio * 0.1 / np.sqrt(np.mean(audio**2))).astype(np.float32)


_PHRASE = "silver morning market station window garden"


def _noisy_repeat_found(phrase: npt.NDArray[np.float32], snr_db: float, noise_seed: int, exact: bool) -> bool:
    """Whether the repeat at 13 s of the phrase first heard at 4 s is found under white noise:
    by the evaluation's criterion (the detection and the repeat overlap by half of the shorter
    one), or with ``exact`` times (start within 0.15 s, half the phrase covered). Any
    detection must be at the repeat's lag and inside the noisy stretch."""
    audio = _filler(20.0, 10) * 0.5
    _place(audio, phrase, 4.0)
    _place(audio, phrase, 13.0)
    rng = np.random.default_rng(noise_seed)  # white noise from 1 s before to 1 s after the repeat
    n0, n1 = 12 * SR, 14 * SR + phrase.size
    rms = float(np.sqrt(np.mean(phrase**2)))
    audio[n0:n1] += rng.standard_normal(n1 - n0).astype(np.float32) * rms * 10 ** (-snr_db / 20)
    events = _matches(_run(audio))
    assert len(events) <= 1, events
    if not events:
        return False
    e, end = events[0], 13.0 + phrase.size / SR
    assert abs((e.start_s - e.first_start_s) - 9.0) <= 0.1, e  # the repeat's lag, not a look-alike
    assert 12.7 <= e.start_s and e.end_s <= end + 0.3, e
    overlap = min(e.end_s, end) - max(e.start_s, 13.0)
    if exact:
        assert abs(e.start_s - 13.0) <= 0.15 and abs(e.first_start_s - 4.0) <= 0.15, e
        return overlap >= 0.5 * (end - 13.0)
    return overlap >= 0.5 * min(e.end_s - e.start_s, end - 13.0)


@pytest.mark.parametrize(("snr_db", "min_found", "exact"), [(10.0, 4, True), (5.0, 3, False)])
def test_spoken_phrase_repeated_in_noise_is_found(snr_db: float, min_found: int, exact: bool) -> None:
    # Four noise draws each; at 10 dB with exact times. At 5 dB by the evaluation's criterion
    # (bench/matcher_scoring.py): the track may break where the noise masks a word and the
    # longest piece is reported (here one of the three: 14.4-15.6 s of 13.0-15.7 s). The
    # search on the fast view (docs/matcher.md, item 10) finds 3 of 4; before it, 2.
    phrase = _speak(_PHRASE)
    found = sum(_noisy_repeat_found(phrase, snr_db, seed, exact) for seed in range(4))
    assert found >= min_found


def test_repeat_whose_track_breaks_is_reported_once() -> None:
    # Two jingles with a different sound between them in each occurrence: the track at the
    # repeat's lag breaks there. The second piece continues the reported repeat (same lag,
    # within refractory_s): one event, not a second, new pattern.
    rng = np.random.default_rng(5)
    first, second = _jingle(21, 1.6), _jingle(22, 1.6)

    def middle() -> npt.NDArray[np.float32]:  # 0.8 s of a different noise burst each time
        return (0.2 * rng.standard_normal(int(0.8 * SR)) * np.hanning(int(0.8 * SR))).astype(np.float32)

    audio = _filler(26.0, 23)
    _place(audio, np.concatenate([first, middle(), second]), 3.0)
    _place(audio, np.concatenate([first, middle(), second]), 15.0)
    events = _matches(_run(audio))
    assert len(events) == 1, events
    e = events[0]
    assert abs(e.start_s - 15.0) <= 0.15 and abs(e.first_start_s - 3.0) <= 0.15, e  # before: + (17.4 <- 5.5, p1)


def test_same_voice_with_every_other_word_changed_is_not_a_repeat() -> None:
    # A hard negative of the evaluation's controls (bench/matcher_streams.py): same voice and
    # speed, words 1, 3, 5 changed. This one is rejected; the ones still reported on the
    # benchmark are those whose changed words are near-homophones in log-mel (docs/matcher.md, limits).
    audio = _filler(20.0, 10) * 0.5
    _place(audio, _speak(_PHRASE), 4.0)
    _place(audio, _speak("paper morning rocket station candle garden"), 13.0)
    assert _matches(_run(audio)) == []


def _telephone(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``audio`` through a telephone line: 300-3400 Hz, 8 kHz, GSM 06.10 full rate (sox), back at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        src, line, dst = Path(tmp) / "a.wav", Path(tmp) / "b.gsm", Path(tmp) / "c.wav"
        sf.write(src, audio, SR, subtype="FLOAT")
        subprocess.run(["sox", "-V1", str(src), "-r", "8000", str(line), "sinc", "300-3400"], check=True)
        subprocess.run(["sox", "-V1", str(line), "-e", "floating-point", str(dst)], check=True)
        out, rate = sf.read(dst, dtype="float32")
    out = soxr.resample(out, rate, SR).astype(np.float32)
    return out[: audio.size] if out.size >= audio.size else np.pad(out, (0, audio.size - out.size))


def _mp3(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``audio`` through MP3 (MPEG-2 layer III, 32 kbit/s at 16 kHz mono, libsndfile)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.mp3"
        sf.write(path, audio, SR, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT")
        out, rate = sf.read(path, dtype="float32")
    assert rate == SR
    return np.asarray(out[: audio.size], np.float32)


@pytest.mark.parametrize("channel", ["telephone", "mp3"])
def test_repeat_through_a_telephone_line_or_a_lossy_codec_is_found(channel: str) -> None:
    # The first occurrence is full band; the repeat comes through the channel, 6 dB down, under
    # a faint noise bed. Found with the repeat's lag and times (bench/RESULTS.md has the
    # benchmark's "phone" and "mp3" conditions, with tempo changes on top).
    through = _telephone if channel == "telephone" else _mp3
    texts = (_PHRASE, "seven rabbits carry silver candles under the bridge", "the quiet harbor opens before morning")
    clips = [_speak(t) for t in texts] + [_jingle(37, 2.0), _jingle(38, 2.0)]
    for k, clip in enumerate(clips):
        audio = _filler(22.0, 40 + k) * 0.5
        _place(audio, clip, 4.0)
        _place(audio, 0.5 * through(clip), 13.0)
        audio += np.random.default_rng(k).standard_normal(audio.size).astype(np.float32) * 0.1 * 10 ** (-25 / 20)
        events = _matches(_run(audio))
        assert len(events) == 1, (k, events)
        e = events[0]
        assert abs((e.start_s - e.first_start_s) - 9.0) <= 0.1 and abs(e.start_s - 13.0) <= 0.3, (k, e)
        assert e.end_s - e.start_s >= 0.6 * clip.size / SR, (k, e)


def test_silence_dc_hum_and_zero_padding_never_match() -> None:
    t = np.arange(4 * SR) / SR
    pieces = {
        "zeros": np.zeros(4 * SR, np.float32),
        "dc": np.full(4 * SR, 0.3, np.float32),
        "hum50": (0.3 * np.sin(2 * np.pi * 50 * t)).astype(np.float32),
        "hum60": (0.3 * np.sin(2 * np.pi * 60 * t)).astype(np.float32),
        "tone": (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
        "quiet": (1e-5 * np.random.default_rng(0).standard_normal(4 * SR)).astype(np.float32),
    }
    order = ["zeros", "hum50", "dc", "hum60", "zeros", "tone", "hum50", "dc", "quiet", "hum60", "tone", "zeros"]
    stationary = np.concatenate([pieces[k] for k in order])
    novelty = MatcherConfig.for_features("logmel", novelty_threshold=0.9, novelty_min_history_s=5.0)
    assert _run(stationary, novelty) == []
    # the same between real sounds, and a real repeat around them is still found
    audio = np.concatenate([_filler(5.0, 5), stationary, _filler(5.0, 6)])
    assert _matches(_run(audio)) == []


def test_repeat_embedded_in_hum_and_silence_keeps_its_bounds() -> None:
    t = np.arange(3 * SR) / SR
    hum = (0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    pattern = _jingle(10, 2.0)
    audio = np.concatenate([_filler(3, 11), hum, pattern, np.zeros(SR, np.float32), _filler(4, 12), hum, pattern, np.zeros(2 * SR, np.float32)])
    events = _matches(_run(audio))
    assert len(events) == 1, events
    second = 3 + 3 + 2 + 1 + 4 + 3
    assert abs(events[0].start_s - second) <= 0.15 and abs(events[0].end_s - (second + 2)) <= 0.15, events


def test_periodic_loop_is_not_reported() -> None:
    bar = _jingle(12, 1.0)
    audio = np.concatenate([_filler(4.0, 13), np.tile(bar, 12), _filler(4.0, 14)])
    assert _matches(_run(audio)) == []


def test_back_to_back_repeat_is_held_one_lag_and_three_in_a_row_are_a_loop() -> None:
    # Music policy (docs/matcher.md): a sound said twice in a row is a repeat, three or more
    # times back-to-back a loop. Whether a third repetition follows is known one lag after the
    # second ends, so a back-to-back repeat is reported then (before, at once: and a loop
    # track that broke off early was reported just before its twin turned periodic).
    for clip in (_jingle(21, 1.6), _speak("silver morning market station")):
        lag = clip.size / SR
        twice = np.concatenate([_filler(6.0, 3), clip, clip, _filler(6.0, 4)])
        events = _matches(_run(twice))
        assert len(events) == 1, events
        e = events[0]
        assert abs(e.first_start_s - 6.0) <= 0.15 and abs(e.start_s - (6.0 + lag)) <= 0.15, e
        assert e.detected_at_s >= e.end_s + lag - 0.1, e  # held one lag
        assert e.detected_at_s <= 6.0 + 2 * lag + lag + 1.0, e
        thrice = np.concatenate([_filler(6.0, 3), clip, clip, clip, _filler(6.0, 4)])
        assert _matches(_run(thrice)) == []


def test_loop_heard_again_after_other_material_is_a_pattern() -> None:
    # Music's own bar-level repetition is not reported, but the whole loop (a jingle with
    # repeated bars) heard again after other material is (docs/matcher.md).
    loop = np.tile(_jingle(12, 1.0), 4)
    audio = np.concatenate([_filler(4.0, 13), loop, _filler(16.0, 14), loop, _filler(4.0, 15)])
    events = _matches(_run(audio))
    # A loop of identical bars repeats at several lags (±1 bar); it may be reported as pieces.
    assert events, "the loop heard again was not reported"
    for e in events:
        assert 24.0 - 0.15 <= e.start_s and e.end_s <= 28.0 + 0.15, e
        assert 4.0 - 0.15 <= e.first_start_s and e.first_end_s <= 8.0 + 0.15, e
    assert sum(e.end_s - e.start_s for e in events) >= 3.5, events


def test_memory_bound_holds_and_old_audio_is_forgotten() -> None:
    config = MatcherConfig.for_features("logmel", buffer_s=20.0)
    audio = _filler(120.0, 15)
    pattern = _jingle(16, 2.0)
    _place(audio, pattern, 5.0)
    _place(audio, pattern, 100.0)  # 95 s later: beyond the 20 s buffer
    lm = LogMel().compute(audio)
    m = PatternMatcher(config, stream="t")
    sizes = set()
    events = []
    for i in range(0, len(lm), 50):
        events += m.push(FeatureBlock(lm.features.frames[i : i + 50], lm.energy_db[i : i + 50]))
        sizes.add(m.nbytes)
    events += m.flush()
    assert len(sizes) == 1 and m.nbytes < 2_000_000
    assert _matches(events) == []
    ring_frames = 20 * 50
    assert m._ring is not None and m._ring.end - m._ring.start == ring_frames


def test_one_hour_buffer_is_bounded() -> None:
    m = PatternMatcher(MatcherConfig.for_features("logmel", buffer_s=3600.0), stream="t", input_dim=64)
    # 180k frames of 2 x 39 dims + 64 raw bands (verification) in float16, and the 4-part
    # segment index (18k x 312 float32): 75 MB, allocated up front.
    assert m.nbytes < 80_000_000


def test_stream_ending_mid_pattern_and_starting_mid_pattern() -> None:
    pattern = _jingle(17, 4.0)
    audio = np.concatenate([pattern[SR:], _filler(8.0, 18), pattern[: int(3.4 * SR)]])  # starts and ends inside
    events = _matches(_run(audio))
    assert len(events) == 1, events
    e = events[0]
    end_s = audio.size / SR
    assert end_s - 0.3 <= e.end_s <= end_s + 1e-6
    assert abs(e.start_s - (3.0 + 8.0 + 1.0)) <= 0.15, e  # the repeat of what the stream began with
    assert e.first_start_s <= 0.1
    assert e.detected_at_s == pytest.approx(e.end_s, abs=0.05)  # reported by flush()


def test_block_size_changes_events_by_less_than_a_segment_hop() -> None:
    # Normalisation statistics are updated per pushed block, so block sizes may move
    # boundaries by a few frames; the detections themselves must not change.
    audio = _filler(20.0, 19)
    pattern = _jingle(20, 2.0)
    _place(audio, pattern, 2.0)
    _place(audio, pattern, 13.0)
    runs = [_matches(_run(audio, block_frames=b)) for b in (1, 7, 50)]
    assert [len(r) for r in runs] == [1, 1, 1]
    for r in runs[1:]:
        assert abs(r[0].start_s - runs[0][0].start_s) <= 0.1 and abs(r[0].end_s - runs[0][0].end_s) <= 0.1
        assert abs(r[0].detected_at_s - runs[0][0].detected_at_s) <= 0.5


def test_novelty_events_for_unheard_sounds() -> None:
    config = MatcherConfig.for_features("logmel", novelty_threshold=0.6, novelty_min_history_s=5.0)
    familiar = [_jingle(s, 1.6) for s in (30, 31, 32)]
    rng = np.random.default_rng(0)
    parts = []
    for i in range(16):
        parts += [familiar[int(rng.integers(3))], np.zeros(int(0.3 * SR), np.float32)]
    history = np.concatenate(parts)
    new = _jingle(33, 2.0)
    audio = np.concatenate([history, new, familiar[0], familiar[1]])
    events = _run(audio, config)
    novel = [e for e in events if isinstance(e, NoveltyEvent)]
    start = history.size / SR
    assert any(e.start_s <= start + 1.0 and e.end_s >= start + 1.0 for e in novel), novel
    late = [e for e in novel if e.start_s > 15.0 and e.end_s < start - 0.5]
    assert len(late) <= 2, late  # familiar material is mostly not novel
    assert any(isinstance(e, MatchEvent) for e in events)


def test_streaming_logmel_feeds_the_matcher_like_offline() -> None:
    audio = _filler(16.0, 23)
    pattern = _jingle(24, 2.0)
    _place(audio, pattern, 1.0)
    _place(audio, pattern, 10.0)
    stream = LogMelStream()
    m = PatternMatcher(CONFIG, "t")
    events = []
    rng = np.random.default_rng(0)
    i = 0
    while i < audio.size:
        n = int(rng.integers(1, 4000))
        out = stream.push(audio[i : i + n])
        i += n
        if len(out):
            events += m.push(FeatureBlock(out.features.frames, out.energy_db, int(out.features.start_samples[0]) // 320))
    streamed = _matches(events + m.flush())
    offline = _matches(_run(audio))
    assert len(streamed) == len(offline) == 1
    assert abs(streamed[0].start_s - offline[0].start_s) <= 0.1 and abs(streamed[0].end_s - offline[0].end_s) <= 0.1


def test_gaps_are_filled_and_bad_blocks_refused() -> None:
    m = PatternMatcher(CONFIG, "t")
    m.push(FeatureBlock(np.zeros((10, 64), np.float32), np.full(10, -100.0, np.float32)))
    m.push(FeatureBlock(np.zeros((5, 64), np.float32), None, start_frame=30))  # 20 dropped frames
    assert m.frames_seen == 35 and m.stats.gap_frames == 20
    with pytest.raises(MatcherInputError, match="already pushed"):
        m.push(FeatureBlock(np.zeros((5, 64), np.float32), None, start_frame=10))
    with pytest.raises(MatcherInputError, match="dim"):
        m.push(FeatureBlock(np.zeros((5, 32), np.float32)))
    with pytest.raises(MatcherInputError, match="NaN"):
        m.push(FeatureBlock(np.full((5, 64), np.nan, np.float32)))
    with pytest.raises(ValueError, match="energy_db"):
        m.push(FeatureBlock(np.zeros((5, 64), np.float32), np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="buffer_s"):
        MatcherConfig(buffer_s=1.0)
