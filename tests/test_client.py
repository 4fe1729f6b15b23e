"""ostinato.client against a real loopback server (and against dead or mute endpoints):
streaming, typed errors with the server's class and hint, retries with backoff and jitter,
connect timeout, circuit breaker, and transparent resume after a dropped connection."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
from pathlib import Path

import numpy as np
import pytest
from server_harness import planted_repeats, running_server

from ostinato.client import ClientConfig, StreamClient, SyncStreamClient
from ostinato.errors import ClientError, ConnectTimeoutError, ServerClosedError, ServerError
from ostinato.stream.breaker import BreakerConfig
from ostinato.stream.errors import BreakerOpenError, ErrorClass
from ostinato.stream.wire import FeaturesFrame

FAST = ClientConfig(timeout_ms=500, max_retries=3, backoff_ms=50, max_backoff_ms=400)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_stream_events_and_summary(tiny_w2v_dir: Path) -> None:
    audio, repeats = planted_repeats()
    async with running_server(tiny_w2v_dir) as server:
        async with StreamClient(server.ws_url, outputs=("events", "status"), config=FAST) as client:
            assert client.ready is not None and client.ready.info["match_features"] == "logmel"
            await client.send_audio(audio)
            bye = await client.end()
    assert bye.reason == "end" and bye.summary["audio_s"] == len(audio) / 16000
    matches = [e for e in client.events() if e["event"] == "match"]
    assert any(abs(e["start_s"] - repeats[1][0]) < 0.5 for e in matches), matches


async def test_resume_after_the_connection_drops(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_resume_grace_s=10) as server:
        client = StreamClient(server.ws_url, outputs=("features",), config=FAST)
        await client.connect()
        stream_id = client.stream_id
        await client.send_audio(audio[: 16000 * 3])
        client.lose_connection()  # as a network failure would
        await asyncio.sleep(0.1)
        await client.send_audio(audio[16000 * 3:])
        bye = await client.end()
        await client.close()
    assert client.resumes >= 1 and client.stream_id == stream_id
    # nothing lost, nothing doubled: every sample arrived once and every frame came back once
    assert bye.summary["audio_s"] == len(audio) / 16000
    frames = [f for f in client.received if isinstance(f, FeaturesFrame)]
    starts = np.concatenate([f.start_sample + 320 * np.arange(f.num_frames) for f in frames])
    assert np.array_equal(np.sort(starts), np.arange((len(audio) - 400) // 320 + 1) * 320)


async def test_server_errors_are_typed_with_class_and_hint(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir, token="a-long-enough-token-123456") as server:
        client = StreamClient(server.ws_url, options={"overflow": "explode"},
                              config=ClientConfig(token="a-long-enough-token-123456", backoff_ms=50))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ServerError) as refused:
            await client.connect()
        assert loop.time() - started < 0.5  # input errors are not retried
        await client.close()
        err = refused.value
        assert err.code == "protocol_error" and err.error_class is ErrorClass.INPUT and "overflow" in str(err) and err.hint
        client = StreamClient(server.ws_url, config=ClientConfig(token="wrong-token-wrong-token-xx", backoff_ms=50))
        with pytest.raises(ClientError) as unauthorized:
            await client.connect()
        await client.close()
        assert unauthorized.value.code == "http_401" and unauthorized.value.error_class is ErrorClass.PERMANENT


async def test_retries_with_backoff_then_gives_up_and_breaker_opens() -> None:
    url = f"ws://127.0.0.1:{_free_port()}/v1/stream"  # nobody listens
    config = dataclasses.replace(FAST, breaker=BreakerConfig(failure_threshold=2, min_calls=2, cooldown_s=30))
    client = StreamClient(url, config=config, rng=random.Random(1))
    delays = list(FAST.retry_policy.delays_s(random.Random(1)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServerClosedError) as failed:
        await client.connect()
    elapsed_s = loop.time() - started
    assert failed.value.error_class is ErrorClass.TRANSIENT
    assert sum(delays) * 0.9 <= elapsed_s < sum(delays) + 2.0  # 3 retries, exponential with jitter
    assert len(delays) == 3 and delays[1] > delays[0] * 0.9
    assert client.breaker.state.value == "closed"  # one failed connect (4 attempts) is one failure
    with pytest.raises(ServerClosedError):
        await client.connect()
    assert client.breaker.state.value == "open"  # two failed connects >= threshold 2
    started = loop.time()
    with pytest.raises(BreakerOpenError):
        await client.connect()
    assert loop.time() - started < 0.05  # fails fast while open
    await client.close()


async def test_connect_timeout_against_a_mute_server() -> None:
    release = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await reader.read(65536)  # reads the upgrade request, never answers
        await release.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = StreamClient(f"ws://127.0.0.1:{port}/v1/stream",
                          config=ClientConfig(timeout_ms=200, max_retries=1, backoff_ms=10, max_backoff_ms=10))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectTimeoutError) as timed_out:
        await client.connect()
    assert 0.4 <= loop.time() - started < 2.0 and "200 ms" in str(timed_out.value)
    assert timed_out.value.error_class is ErrorClass.TRANSIENT
    await client.close()
    release.set()
    await asyncio.gather(*handlers)
    server.close()
    await server.wait_closed()


async def test_sync_wrapper(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir) as server:
        def work() -> tuple[float, int]:
            with SyncStreamClient(server.ws_url, outputs=("status",), config=FAST) as client:
                client.send_audio(audio[:32000])
                status = client.flush()
                bye = client.end()
            return status.audio_s, int(bye.summary["audio_s"])

        audio_s, total_s = await asyncio.to_thread(work)
    assert audio_s >= 1.9 and total_s == 2
