"""StdinSource: raw s16le/f32le from real pipes and files, partial frames, bad specs."""

from __future__ import annotations

import asyncio
import io
import os
import threading

import numpy as np
import pytest

from ostinato.stream.errors import ConfigError
from ostinato.stream.frames import AudioChunk
from ostinato.stream.source_stdin import StdinSource
from ostinato.stream.wire import encode_pcm


async def _collect(source: StdinSource) -> np.ndarray:
    chunks: list[AudioChunk] = []
    async for chunk in source.chunks():
        assert chunk.start_sample == sum(c.num_samples for c in chunks)
        chunks.append(chunk)
    return np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)


def _tone(n: int, rate: int = 16000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)


async def test_s16le_through_a_real_pipe_with_odd_writes() -> None:
    audio = _tone(16000)
    data = encode_pcm(audio, "s16le")
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb") as w:
            for i in range(0, len(data), 777):  # odd sizes split samples across writes
                w.write(data[i : i + 777])
                w.flush()

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(read_fd, "rb") as r:
        got = await _collect(StdinSource(16000, "s16le", stream=r))
    thread.join()
    assert len(got) == 16000 and np.allclose(got, audio, atol=1 / 32768)


async def test_f32le_stereo_from_a_file_object_downmixed() -> None:
    stereo = np.stack([_tone(8000), -_tone(8000) * 0.0], axis=1)
    got = await _collect(StdinSource(16000, "f32le", channels=2, stream=io.BytesIO(encode_pcm(stereo, "f32le"))))
    assert np.allclose(got, stereo.mean(axis=1), atol=1e-7)


async def test_44100_is_resampled_and_partial_frame_ignored() -> None:
    data = encode_pcm(_tone(44100, 44100), "s16le") + b"\x01"
    got = await _collect(StdinSource(44100, "s16le", stream=io.BytesIO(data)))
    assert abs(len(got) - 16000) <= 1


async def test_stop_ends_reading_an_open_pipe() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, encode_pcm(_tone(3200), "s16le"))
    with os.fdopen(read_fd, "rb") as r:
        source = StdinSource(16000, "s16le", stream=r, block_s=0.01)
        got: list[AudioChunk] = []

        async def consume() -> None:
            async for chunk in source.chunks():
                got.append(chunk)
                source.stop()

        await asyncio.wait_for(consume(), 5)  # the writer never closes: stop() must end it
    os.close(write_fd)
    assert got


@pytest.mark.parametrize(("args", "match"), [((16000, "mp3"), "format"), ((10, "s16le"), "rate"), ((16000, "s16le", 0), "channels")])
def test_bad_declarations(args: tuple[object, ...], match: str) -> None:
    kwargs = {"channels": args[2]} if len(args) > 2 else {}
    with pytest.raises(ConfigError, match=match):
        StdinSource(args[0], args[1], **kwargs)  # type: ignore[arg-type]
