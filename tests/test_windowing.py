"""Windower: exact stitching, chunking invariance (hypothesis), flush, seed config, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ostinato.stream.errors import ConfigError, InvalidAudioError
from ostinato.stream.frames import Window
from ostinato.stream.windowing import Windower, WindowerConfig, num_frames

STRIDE = 320


def _windows(config: WindowerConfig, audio: np.ndarray, cuts: list[int]) -> list[Window]:
    w = Windower(config, "s")
    out: list[Window] = []
    pos = 0
    for cut in sorted(cuts) + [len(audio)]:
        out += w.push(audio[pos:cut])
        pos = max(pos, cut)
    return out + w.flush()


def _covered_frames(windows: list[Window]) -> list[int]:
    return [f for win in windows for f in range(win.core_start_frame, win.core_start_frame + win.core_frames)]


def _check_geometry(config: WindowerConfig, audio: np.ndarray, windows: list[Window]) -> None:
    assert _covered_frames(windows) == list(range(num_frames(len(audio))))
    for win in windows:
        assert win.start_sample % STRIDE == 0
        assert np.array_equal(win.samples, audio[win.start_sample : win.start_sample + win.num_samples])
        first = win.start_sample // STRIDE
        in_window = num_frames(win.num_samples)
        # Core frames lie inside the window's own frames.
        assert first <= win.core_start_frame
        assert win.core_start_frame + win.core_frames <= first + in_window
        if not win.last:
            want = config.window_samples
            if config.short_start:  # a clipped left context: only up to core end + right context + tail
                core_end = (win.core_start_frame + win.core_frames) * STRIDE
                want = min(want, core_end + config.right_context_samples + 80 - win.start_sample)
            assert win.num_samples == want
        elif len(audio) >= config.window_samples:
            assert win.num_samples == config.window_samples


configs = st.builds(
    WindowerConfig,
    hop_samples=st.integers(1, 12).map(lambda k: k * STRIDE),
    left_context_samples=st.integers(0, 10).map(lambda k: k * STRIDE),
    right_context_samples=st.integers(0, 10).map(lambda k: k * STRIDE),
    short_start=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(config=configs, length=st.integers(0, 24000), data=st.data())
def test_any_chunking_gives_identical_windows(config: WindowerConfig, length: int, data: st.DataObject) -> None:
    audio = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    cuts = data.draw(st.lists(st.integers(0, length), max_size=30))
    reference = _windows(config, audio, [])
    chunked = _windows(config, audio, cuts)
    _check_geometry(config, audio, reference)
    assert len(chunked) == len(reference)
    for a, b in zip(chunked, reference, strict=True):
        assert (a.index, a.start_sample, a.core_start_frame, a.core_frames, a.last) == (
            b.index, b.start_sample, b.core_start_frame, b.core_frames, b.last
        )
        assert np.array_equal(a.samples, b.samples)


def test_seed_config_chunk_1600_overlap_400() -> None:
    config = WindowerConfig.from_chunk_overlap(chunk_samples=1600, overlap_samples=400)
    assert (config.hop_samples, config.left_context_samples, config.right_context_samples) == (1600, 320, 0)
    assert config.window_samples == 2000 and config.window_frames == 6
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    windows = _windows(config, audio, list(range(0, 16000, 1600)))
    _check_geometry(config, audio, windows)
    # Consecutive full windows share exactly the 400-sample overlap.
    for a, b in zip(windows[1:], windows[2:], strict=False):
        if b.num_samples == config.window_samples and not b.last:
            assert a.start_sample + a.num_samples - b.start_sample == 400


def test_first_windows_start_at_zero_and_keep_shape() -> None:
    config = WindowerConfig(hop_samples=640, left_context_samples=1600, right_context_samples=320)
    audio = np.ones(20000, dtype=np.float32)
    windows = _windows(config, audio, [])
    assert windows[0].start_sample == 0 and windows[1].start_sample == 0
    assert windows[3].start_sample == (3 * 2 - 5) * STRIDE
    assert {w.num_samples for w in windows} == {config.window_samples}


def test_short_start_cuts_first_windows_once_core_and_right_context_arrived() -> None:
    config = WindowerConfig(hop_samples=640, left_context_samples=1600, right_context_samples=320, short_start=True)
    audio = np.random.default_rng(1).standard_normal(20000).astype(np.float32)
    w = Windower(config, "s")
    assert w.push(audio[:1039]) == []  # core 640 + right 320 + receptive tail 80 = 1040
    first = w.push(audio[1039:1040])
    assert [(x.start_sample, x.num_samples, x.core_start_frame) for x in first] == [(0, 1040, 0)]
    sizes = [x.num_samples for x in w.push(audio[1040:])]
    assert sizes[:3] == [1680, 2320, config.window_samples]  # grows by one hop until the left context is whole
    assert set(sizes[2:]) == {config.window_samples}
    # Without it, the first three windows wait for one full window and arrive together.
    plain = Windower(dataclasses.replace(config, short_start=False), "s").push(audio[: config.window_samples])
    assert [x.core_start_frame for x in plain] == [0, 2, 4]


def test_short_stream_gives_one_whole_window() -> None:
    config = WindowerConfig()
    audio = np.arange(5000, dtype=np.float32) / 5000
    windows = _windows(config, audio, [100, 2000])
    assert len(windows) == 1 and windows[0].last
    assert windows[0].num_samples == 5000 and windows[0].core_frames == num_frames(5000)
    assert _windows(config, audio[:399], []) == []


def test_flush_window_is_aligned_to_the_end() -> None:
    config = WindowerConfig(hop_samples=3200, left_context_samples=3200, right_context_samples=1600)
    audio = np.random.default_rng(1).standard_normal(50_123).astype(np.float32)
    windows = _windows(config, audio, [])
    last = windows[-1]
    assert last.last and last.num_samples == config.window_samples
    total = num_frames(len(audio))
    assert last.core_start_frame + last.core_frames == total
    assert last.start_sample // STRIDE + config.window_frames == total


def test_buffer_stays_bounded() -> None:
    config = WindowerConfig()
    w = Windower(config)
    rng = np.random.default_rng(2)
    for _ in range(2000):
        w.push(rng.standard_normal(160).astype(np.float32))
        assert w.buffered_samples <= config.window_samples + config.hop_samples + 160
    assert w.samples_pushed == 320_000


def test_timestamps_are_stamped() -> None:
    w = Windower(WindowerConfig.from_chunk_overlap())
    windows = w.push(np.zeros(2000, dtype=np.float32), now_s=12.5, received_s=12.0)
    assert windows[0].ready_s == 12.5 and windows[0].received_s == 12.0


def test_bad_audio_is_rejected() -> None:
    w = Windower(WindowerConfig())
    with pytest.raises(InvalidAudioError, match="non-finite"):
        w.push(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(InvalidAudioError, match="shape"):
        w.push(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(InvalidAudioError, match="dtype"):
        w.push(np.zeros(10, dtype=np.int16))
    w.flush()
    with pytest.raises(RuntimeError, match="reset"):
        w.push(np.zeros(10, dtype=np.float32))
    w.reset()
    assert w.push(np.zeros(10, dtype=np.float32)) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"hop_samples": 0}, {"hop_samples": 1000}, {"left_context_samples": -320}, {"right_context_samples": 100}],
)
def test_invalid_config_names_the_field(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        WindowerConfig(**kwargs)


def test_from_seconds_and_bad_overlap() -> None:
    config = WindowerConfig.from_seconds(hop_s=0.5, left_context_s=0.25, right_context_s=0.0)
    assert (config.hop_samples, config.left_context_samples) == (8000, 3840)  # 12.5 frames -> 12
    assert config.added_latency_s == pytest.approx(80 / 16000)
    with pytest.raises(ConfigError, match="overlap_samples"):
        WindowerConfig.from_chunk_overlap(1600, 500)
    with pytest.raises(ConfigError):
        WindowerConfig.from_seconds(hop_s=float("nan"))
