"""Describe plumbing without a model: the audio ring, where the clip is cut, the clip store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ostinato.stream.audio_ring import AudioRing
from ostinato.stream.clip_store import ClipStore, clip_dir_for
from ostinato.stream.pattern_describe import PatternDescriberConfig, clip_span

W = 164080  # GAMA's window: 1024 fbank frames


def test_ring_keeps_the_newest_samples_by_global_index() -> None:
    ring = AudioRing(1000)
    x = np.sin(np.arange(2500) / 7).astype(np.float32) * 0.5
    for i in range(0, 2500, 300):  # wraps several times, pieces straddle the end
        ring.push(x[i : i + 300])
    assert (ring.start, ring.end, ring.nbytes) == (1500, 2500, 2000)
    assert ring.holds(1500, 2500) and not ring.holds(1499, 1600)
    np.testing.assert_allclose(ring.read(1700, 2300), x[1700:2300], atol=1 / 32767)
    np.testing.assert_allclose(ring.read(0, 1600), x[1500:1600], atol=1 / 32767)  # clipped to what is held
    assert ring.read(2600, 2700).size == 0
    ring.push(np.full(5000, 3.0, np.float32))  # longer than the ring; out-of-range samples are clipped
    assert ring.end == 7500 and ring.read(6500, 7500).max() == pytest.approx(1.0)


def test_ring_validates() -> None:
    with pytest.raises(ValueError, match="capacity_samples"):
        AudioRing(0)


def test_clip_is_centred_on_the_first_occurrence() -> None:
    first, latest = (400_000, 432_000), (900_000, 932_000)
    start, stop, which = clip_span(first, latest, (0, 1_000_000), W)
    assert which == "first" and stop - start == W and (start + stop) // 2 == pytest.approx(416_000, abs=1)


def test_clip_is_clipped_at_the_stream_start_and_shifted_back_at_its_end() -> None:
    assert clip_span((16_000, 48_000), (200_000, 232_000), (0, 240_000), W) == (0, W, "first")
    # the audio after the occurrence does not exist (yet): the window moves back
    assert clip_span((200_000, 232_000), (200_000, 232_000), (0, 240_000), W) == (240_000 - W, 240_000, "first")
    # a stream shorter than the window: all of it (the model pads as upstream GAMA does)
    assert clip_span((16_000, 48_000), (64_000, 96_000), (0, 100_000), W) == (0, 100_000, "first")


def test_clip_falls_back_to_the_latest_occurrence() -> None:
    start, stop, which = clip_span((10_000, 40_000), (600_000, 630_000), (300_000, 640_000), W)
    assert which == "latest" and start <= 600_000 and 630_000 <= stop <= 640_000
    assert clip_span((10_000, 40_000), (600_000, 630_000), (615_000, 640_000), W) is None


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="ring_s"):
        PatternDescriberConfig("m", True, ring_s=5.0)
    with pytest.raises(ValueError, match="prompt"):
        PatternDescriberConfig("m", True, prompt=" ")


def test_clip_store_round_trip_and_bound(tmp_path: Path) -> None:
    store = ClipStore(clip_dir_for(tmp_path / "patterns.db"), max_clips=2)
    assert store.directory == tmp_path / "patterns.db.clips"
    audio = (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    for i in range(3):
        path = store.put(f"pat-{i}", audio, 16000, {"stream": "radio", "start_s": float(i), "occurrence": "first"})
        os.utime(path, (1e9 + i, 1e9 + i))  # distinct ages (file systems may store coarse mtimes)
    assert "pat-0" not in store and "pat-2" in store and store.evicted == 1  # the oldest went first
    clip = store.get("pat-2")
    assert clip is not None
    got, rate, info = clip
    assert rate == 16000 and info == {"stream": "radio", "start_s": 2.0, "occurrence": "first"}
    np.testing.assert_allclose(got, audio, atol=1 / 32767)
    assert store.get("pat-0") is None
    with pytest.raises(ValueError, match="pattern_id"):
        store.put("../escape", audio, 16000, {})


def test_describe_event_round_trips_and_validates() -> None:
    from ostinato.stream.events import DescribeEvent, event_from_json, event_to_json

    event = DescribeEvent("radio", "pat-1", "a bell rings", None, "gama-tiny", True, "Describe the audio.",
                          1.5, 11.755, "first", 321.98765, 20.0)
    line = event_to_json(event)
    assert line.startswith('{"event":"describe"') and '"elapsed_ms":321.9876' in line
    back = event_from_json(line)
    assert isinstance(back, DescribeEvent) and back.text == "a bell rings" and back.clip_end_s == 11.755
    with pytest.raises(ValueError, match="exactly one"):
        DescribeEvent("radio", "pat-1", None, None, "m", True, "p", 0.0, 1.0, "first", 1.0, 1.0)
    with pytest.raises(ValueError, match="occurrence"):
        DescribeEvent("radio", "pat-1", "t", None, "m", True, "p", 0.0, 1.0, "second", 1.0, 1.0)
