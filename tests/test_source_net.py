"""NetSource against real aiohttp feed servers on 127.0.0.1: resume, gaps, errors, retry, breaker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import WSMsgType, web

from ostinato.stream.breaker import BreakerConfig
from ostinato.stream.errors import ErrorClass, SourceClosedError, SourceConnectionError, SourceUnavailableError, StreamError
from ostinato.stream.frames import AudioChunk
from ostinato.stream.metrics import StreamMetrics
from ostinato.stream.retry import RetryPolicy
from ostinato.stream.source_net import NetSource, NetSourceConfig
from ostinato.stream.wire import Audio, Bye, End, ErrorFrame, Hello, Ready, decode_frame, encode_frame, encode_pcm

FAST = NetSourceConfig(
    connect_timeout_s=2, ready_timeout_s=2, idle_timeout_s=2,
    retry=RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05),
    breaker=BreakerConfig(failure_threshold=10, cooldown_s=0.05),
)
BLOCK = 800


class Feed:
    """An audio feed server: streams ``audio`` in BLOCK-sample frames from ``resume_from_seq``."""

    def __init__(self, audio: npt.NDArray[np.float32], *, cut_after: int | None = None, skip_seq: int | None = None,
                 encoding: str = "s16le", sample_rate: int = 16000, start_sample: bool = True) -> None:
        self.audio, self.cut_after, self.skip_seq = audio, cut_after, skip_seq
        self.encoding, self.sample_rate, self.start_sample = encoding, sample_rate, start_sample
        self.hellos: list[Hello] = []

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive()
        hello = decode_frame(msg.data)
        assert isinstance(hello, Hello) and hello.role == "receive"
        self.hellos.append(hello)
        await ws.send_bytes(encode_frame(Ready(stream_id=hello.stream_id, sample_rate=self.sample_rate, encoding=self.encoding)))  # type: ignore[arg-type]
        seq = hello.resume_from_seq or 0
        n_frames = -(-len(self.audio) // BLOCK)
        while seq < n_frames:
            if self.cut_after is not None and len(self.hellos) == 1 and seq == self.cut_after:
                await ws.close()  # the connection drops mid-stream
                return ws
            if seq != self.skip_seq:
                block = self.audio[seq * BLOCK : (seq + 1) * BLOCK]
                start = seq * BLOCK if self.start_sample else None
                await ws.send_bytes(encode_frame(Audio(seq=seq, pcm=encode_pcm(block, self.encoding), start_sample=start)))
            seq += 1
        await ws.send_bytes(encode_frame(End()))
        await ws.close()
        return ws


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_get("/feed", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"ws://127.0.0.1:{port}/feed"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _collect(source: NetSource) -> npt.NDArray[np.float32]:
    chunks: list[AudioChunk] = []
    async for chunk in source.chunks():
        assert chunk.start_sample == sum(c.num_samples for c in chunks)  # contiguous timeline
        chunks.append(chunk)
    return np.concatenate([c.samples for c in chunks])


def _audio(seconds: float = 1.0) -> npt.NDArray[np.float32]:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def test_receives_whole_feed(serve: Any) -> None:
    audio = _audio()
    feed = Feed(audio, encoding="f32le")
    received = await _collect(NetSource(await serve(feed.handler), stream_id="a", config=FAST))
    assert np.array_equal(received, audio)
    assert feed.hellos[0].stream_id == "a"


async def test_reconnects_and_resumes_after_a_drop(serve: Any) -> None:
    audio = _audio(1.5)
    feed = Feed(audio, cut_after=7)
    metrics = StreamMetrics()
    source = NetSource(await serve(feed.handler), config=FAST, metrics=metrics)
    received = await _collect(source)
    assert len(received) == len(audio) and np.allclose(received, audio, atol=1 / 32768)
    assert [h.resume_from_seq for h in feed.hellos] == [None, 7]
    assert source.reconnects == 1 and metrics.value("ostinato_source_reconnects_total", {"source": "net"}) == 1


@pytest.mark.parametrize("start_sample", [True, False])
async def test_sequence_gap_is_filled_with_silence(serve: Any, start_sample: bool) -> None:
    audio = _audio(1.0)
    source = NetSource(await serve(Feed(audio, skip_seq=3, encoding="f32le", start_sample=start_sample).handler), config=FAST)
    received = await _collect(source)
    expected = audio.copy()
    expected[3 * BLOCK : 4 * BLOCK] = 0.0
    assert source.gap_samples == BLOCK and np.array_equal(received, expected)


async def test_feed_at_44100_is_resampled(serve: Any) -> None:
    t = np.arange(44100) / 44100
    audio = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    received = await _collect(NetSource(await serve(Feed(audio, encoding="f32le", sample_rate=44100).handler), config=FAST))
    assert abs(len(received) - 16000) <= 1


async def test_permanent_error_frame_ends_the_stream(serve: Any) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_bytes(encode_frame(ErrorFrame(code="no_such_feed", message="feed x is gone", error_class="permanent", hint="ask for another feed", fatal=True)))
        await ws.close()
        return ws

    with pytest.raises(SourceClosedError, match="feed x is gone") as info:
        await _collect(NetSource(await serve(handler), config=FAST))
    assert info.value.error_class is ErrorClass.PERMANENT and info.value.hint == "ask for another feed"


async def test_http_4xx_is_not_retried(serve: Any) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=401, text="no token")

    with pytest.raises(SourceUnavailableError, match="401"):
        await _collect(NetSource(await serve(handler), config=FAST))
    assert calls == 1


async def test_unreachable_peer_retries_boundedly_and_opens_breaker() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    config = NetSourceConfig(connect_timeout_s=1, retry=RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.02),
                             breaker=BreakerConfig(failure_threshold=2, cooldown_s=0.05))
    source = NetSource(f"ws://127.0.0.1:{port}/feed", config=config, metrics=StreamMetrics())
    with pytest.raises(SourceConnectionError, match="gave up after 5 attempts") as info:
        await _collect(source)
    assert info.value.error_class is ErrorClass.TRANSIENT
    assert source.breaker.open_count >= 1


async def test_text_frames_are_a_protocol_error(serve: Any) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str("hello?")
        await ws.receive()
        return ws

    with pytest.raises(StreamError, match="text message") as info:
        await _collect(NetSource(await serve(handler), config=FAST))
    assert info.value.error_class is ErrorClass.INPUT


async def test_stop_ends_a_live_feed(serve: Any) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_bytes(encode_frame(Ready(stream_id="x")))
        seq = 0
        reader = asyncio.ensure_future(ws.receive())  # sees the client's close
        while not reader.done() and not ws.closed and seq < 1000:  # bounded: a lost close cannot hang the test
            await ws.send_bytes(encode_frame(Audio(seq=seq, pcm=encode_pcm(np.zeros(160, np.float32), "f32le"))))
            seq += 1
            await asyncio.sleep(0.01)
        return ws

    source = NetSource(await serve(handler), config=FAST)
    n = 0
    async for _ in source.chunks():
        n += 1
        if n == 5:
            source.stop()
    assert n >= 5
    await source.close()


async def test_server_bye_for_shutdown_triggers_reconnect(serve: Any) -> None:
    hellos = 0
    audio = _audio(0.2)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        nonlocal hellos
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = decode_frame((await ws.receive()).data)
        hellos += 1
        await ws.send_bytes(encode_frame(Ready(stream_id="x")))
        if hellos == 1:
            await ws.send_bytes(encode_frame(Bye(reason="shutdown")))
        else:
            assert isinstance(hello, Hello)
            await ws.send_bytes(encode_frame(Audio(seq=0, pcm=encode_pcm(audio, "f32le"))))
            await ws.send_bytes(encode_frame(End()))
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        return ws

    received = await _collect(NetSource(await serve(handler), config=FAST))
    assert hellos == 2 and np.array_equal(received, audio)
