"""Source specs, BlockConverter and ArraySource."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ostinato.stream.errors import ConfigError, SourceUnavailableError
from ostinato.stream.source_file import FileSource
from ostinato.stream.source_mic import MicSource
from ostinato.stream.source_net import NetSource
from ostinato.stream.source_stdin import StdinSource
from ostinato.stream.sources import ArraySource, BlockConverter, open_source


def test_open_source_specs(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    source = open_source(f"file:{path}", realtime=True)
    assert isinstance(source, FileSource) and source.live and source.stream_id == "a.wav"
    assert isinstance(open_source(str(path)), FileSource)
    mic = open_source("mic:3")
    assert isinstance(mic, MicSource) and mic.device == 3 and mic.live
    assert isinstance(open_source("mic:USB Audio"), MicSource)
    stdin = open_source("stdin:48000:f32le:2")
    assert isinstance(stdin, StdinSource) and (stdin.sample_rate, stdin.encoding, stdin.channels) == (48000, "f32le", 2)
    net = open_source("ws://127.0.0.1:8765/v1/feed", stream_id="n")
    assert isinstance(net, NetSource) and not net.live and net.stream_id == "n"


@pytest.mark.parametrize("spec", ["stdin:16000", "stdin:fast:s16le", "stdin:16000:s16le:x", "http://x/y", "file:"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        open_source(spec)


def test_missing_file_spec() -> None:
    with pytest.raises(SourceUnavailableError):
        open_source("file:/nonexistent/x.wav")


def test_block_converter_positions_and_gaps() -> None:
    conv = BlockConverter("s", 16000)
    a = conv.convert(np.ones(100, np.float32))
    g = conv.gap(50)
    b = conv.convert(np.ones(10, np.float32))
    assert [(c.start_sample, c.num_samples) for c in a + g + b] == [(0, 100), (100, 50), (150, 10)]
    assert np.all(g[0].samples == 0) and conv.finish() == []


async def test_array_source_any_block_sizes() -> None:
    audio = np.arange(1000, dtype=np.float32) / 1000
    source = ArraySource(audio, block_samples=[7, 300, 1])
    chunks = [c async for c in source.chunks()]
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), audio)
    assert [c.num_samples for c in chunks[:4]] == [7, 300, 1, 7]
    with pytest.raises(ConfigError):
        ArraySource(audio, block_samples=[0])
