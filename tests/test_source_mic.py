"""MicSource through its callback path (no PortAudio device needed) and the install hint."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import numpy as np
import pytest

from ostinato.stream.errors import SourceUnavailableError
from ostinato.stream.frames import AudioChunk
from ostinato.stream.metrics import StreamMetrics
from ostinato.stream.source_mic import MicSource, import_sounddevice, list_input_devices


class CallbackStream:
    """Stands in for sounddevice.InputStream: records its arguments; the test plays PortAudio."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.started = self.stopped = self.closed = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


async def _run_mic(source: MicSource, blocks: list[np.ndarray], pause_after: int | None = None) -> list[AudioChunk]:
    """Feed ``blocks`` through the real callback from a foreign thread, then stop."""
    streams: list[CallbackStream] = []
    source._factory = lambda **kw: streams.append(CallbackStream(**kw)) or streams[-1]
    chunks: list[AudioChunk] = []

    async def consume() -> None:
        async for chunk in source.chunks():
            chunks.append(chunk)

    consumer = asyncio.ensure_future(consume())
    while not streams:
        await asyncio.sleep(0.005)
    stream = streams[0]
    assert stream.started and stream.kwargs["dtype"] == "float32"

    def portaudio_thread(items: list[np.ndarray]) -> None:
        for block in items:
            stream.kwargs["callback"](block, len(block), None, None)
            block[:] = 99.0  # PortAudio reuses its buffer: the source must have copied

    split = len(blocks) if pause_after is None else pause_after
    await asyncio.to_thread(portaudio_thread, blocks[:split])
    if pause_after is not None:
        await asyncio.to_thread(portaudio_thread, blocks[split:])
    await asyncio.sleep(0.05)
    source.stop()
    await asyncio.wait_for(consumer, 5)
    assert stream.stopped and stream.closed
    return chunks


async def test_callback_path_delivers_exact_audio() -> None:
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.5, 0.5, 16000).astype(np.float32)
    blocks = [audio[i : i + 320, None].copy() for i in range(0, 16000, 320)]
    chunks = await _run_mic(MicSource(sample_rate=16000, block_s=0.02), blocks)
    got = np.concatenate([c.samples for c in chunks])
    assert np.array_equal(got, audio)
    assert [c.start_sample for c in chunks] == list(range(0, 16000, 320))
    assert all(c.received_s > 0 for c in chunks)


async def test_stereo_48k_is_downmixed_and_resampled() -> None:
    t = np.arange(48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([tone, tone], axis=1)
    blocks = [stereo[i : i + 960].copy() for i in range(0, 48000, 960)]
    chunks = await _run_mic(MicSource(sample_rate=48000, channels=2, block_s=0.02), blocks)
    got = np.concatenate([c.samples for c in chunks])
    assert abs(len(got) - 16000) <= 1
    assert abs(np.sqrt(np.mean(got[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


async def test_overflowing_queue_drops_oldest_and_fills_silence() -> None:
    metrics = StreamMetrics()
    source = MicSource(sample_rate=16000, block_s=0.02, queue_blocks=4, metrics=metrics)
    blocks = [np.full((320, 1), 0.25, np.float32) for _ in range(10)]
    # The loop is not given a chance to run between callbacks: 10 blocks into a 4-block queue.
    streams: list[CallbackStream] = []
    source._factory = lambda **kw: streams.append(CallbackStream(**kw)) or streams[-1]
    chunks: list[AudioChunk] = []

    async def consume() -> None:
        async for chunk in source.chunks():
            chunks.append(chunk)

    consumer = asyncio.ensure_future(consume())
    while not streams:
        await asyncio.sleep(0.005)
    loop = asyncio.get_running_loop()
    callback = streams[0].kwargs["callback"]
    # Queue the offers without letting the consumer run in between.
    for block in blocks:
        callback(block, 320, None, None)
    await asyncio.sleep(0.05)
    source.stop()
    await asyncio.wait_for(consumer, 5)
    assert source.dropped_blocks == 6
    got = np.concatenate([c.samples for c in chunks])
    assert len(got) == 10 * 320  # timeline intact
    assert np.all(got[: 6 * 320] == 0.0) and np.all(got[6 * 320 :] == 0.25)  # lost blocks are silence
    assert metrics.value("ostinato_source_gap_samples_total", {"source": "mic"}) == 6 * 320
    assert metrics.value("ostinato_channel_dropped_items_total", {"channel": "mic_raw", "reason": "drop_oldest"}) == 6
    assert loop.is_running()


def test_missing_sounddevice_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import raises ImportError
    with pytest.raises(SourceUnavailableError) as info:
        import_sounddevice()
    assert "libportaudio2" in info.value.hint
    with pytest.raises(SourceUnavailableError):
        list_input_devices()


async def test_missing_device_is_a_clear_error() -> None:
    pytest.importorskip("sounddevice")
    source = MicSource(device="no such microphone 1234")
    with pytest.raises(SourceUnavailableError, match="no such microphone") as info:
        async for _ in source.chunks():
            pass
    assert "ostinato devices" in info.value.hint
