"""Sinks: callback, .npy (with dropped frames as NaN), msgpack wire frames, JSON lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from ostinato.stream.errors import ConfigError
from ostinato.stream.frames import StreamEnd, StreamFeatures, WindowTiming
from ostinato.stream.sinks import CallbackSink, JsonlSummarySink, MsgpackFileSink, NpyFileSink, read_msgpack_features

TIMING = WindowTiming(0.001, 0.01, 0.0001, 2, 0.02)


def _features(stream: str, first: int, count: int, dim: int = 4, index: int = 0) -> StreamFeatures:
    frames = (np.arange(count * dim, dtype=np.float32).reshape(count, dim) + first * 100).astype(np.float32)
    starts = (np.arange(count, dtype=np.int64) + first) * 320
    return StreamFeatures(stream, index, frames, starts, 16000, "last_hidden_state", TIMING)


async def test_npy_sink_writes_rows_at_frame_index(tmp_path: Path) -> None:
    sink = NpyFileSink(tmp_path / "out-{stream}.npy")
    await sink.consume(_features("a", 0, 5))
    await sink.consume(_features("b", 0, 2))
    await sink.consume(_features("a", 8, 3, index=2))  # frames 5..7 were dropped
    await sink.end_stream(StreamEnd("a"))
    await sink.close()  # b never ended: written at close
    a = np.load(tmp_path / "out-a.npy")
    assert a.shape == (11, 4) and np.array_equal(a[:5], _features("a", 0, 5).frames)
    assert np.isnan(a[5:8]).all() and np.array_equal(a[8:], _features("a", 8, 3).frames)
    assert np.load(tmp_path / "out-b.npy").shape == (2, 4)
    assert not list(tmp_path.glob("*.part"))


async def test_npy_sink_refuses_a_second_stream_without_template(tmp_path: Path) -> None:
    sink = NpyFileSink(tmp_path / "one.npy")
    await sink.consume(_features("a", 0, 1))
    with pytest.raises(ConfigError, match="second stream") as info:
        await sink.consume(_features("b", 0, 1))
    assert "{stream}" in info.value.hint
    await sink.close()


async def test_msgpack_sink_round_trip(tmp_path: Path) -> None:
    sink = MsgpackFileSink(tmp_path / "f.msgpack")
    await sink.consume(_features("a", 0, 3))
    await sink.consume(_features("b", 4, 2))
    await sink.end_stream(StreamEnd("a"))
    await sink.close()
    frames = list(read_msgpack_features(tmp_path / "f.msgpack"))
    assert [(f.stream_id, f.start_sample, f.num_frames) for f in frames] == [("a", 0, 3), ("b", 1280, 2)]
    assert np.array_equal(frames[1].to_array(), _features("b", 4, 2).frames)


async def test_jsonl_summary(tmp_path: Path) -> None:
    buffer = io.StringIO()
    sink = JsonlSummarySink(buffer)
    await sink.consume(_features("a", 50, 25))
    await sink.end_stream(StreamEnd("a", samples=32000, error="bad", error_class="input"))
    await sink.close()
    first, last = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["stream"] == "a" and first["frames"] == 25 and first["start_s"] == 1.0
    assert first["end_s"] == pytest.approx((74 * 320 + 400) / 16000, abs=1e-4)
    assert first["inference_ms"] == 10.0 and first["batch_size"] == 2
    assert last == {"stream": "a", "end": True, "samples": 32000, "error": "bad"}


async def test_callback_sink_sync_and_async() -> None:
    seen: list[str] = []

    async def on_end(end: StreamEnd) -> None:
        seen.append("end:" + end.stream_id)

    sink = CallbackSink(lambda f: seen.append(f.stream_id), on_end)
    await sink.consume(_features("x", 0, 1))
    await sink.end_stream(StreamEnd("x"))
    await sink.close()
    assert seen == ["x", "end:x"]
