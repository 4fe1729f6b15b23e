"""Resume, output sequence numbers, replay, acknowledgements (through_seq) and flush on a real
loopback server, with the raw wire protocol and with ostinato.client (through a TCP proxy that
can cut a connection on the client side while the server side stays open)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import aiohttp
import numpy as np
from server_harness import planted_repeats, running_server, send_audio, slowed_model

from ostinato.client import ClientConfig, StreamClient
from ostinato.stream.wire import (
    Bye,
    End,
    ErrorFrame,
    Event,
    FeaturesFrame,
    Frame,
    Hello,
    Ready,
    Status,
    decode_frame,
    encode_frame,
)

FAST = ClientConfig(timeout_ms=2000, max_retries=3, backoff_ms=50, max_backoff_ms=400)


async def _recv(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 10) -> Frame:
    msg = await ws.receive(timeout=timeout_s)
    assert msg.type is aiohttp.WSMsgType.BINARY, (msg.type, msg.data)
    return decode_frame(msg.data)


async def _open(http: aiohttp.ClientSession, url: str, hello: Hello) -> tuple[aiohttp.ClientWebSocketResponse, Frame]:
    ws = await http.ws_connect(url)
    await ws.send_bytes(encode_frame(hello))
    return ws, await _recv(ws)


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: type, timeout_s: float = 30) -> list[Frame]:
    frames: list[Frame] = []
    async with asyncio.timeout(timeout_s):
        while not frames or not isinstance(frames[-1], kind):
            frames.append(await _recv(ws, timeout_s))
    return frames


class _Proxy:
    """TCP proxy on 127.0.0.1; :meth:`cut` closes the client side of every open connection and
    keeps the server side open (a half-dead connection) until :meth:`release`."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.held: list[asyncio.StreamWriter] = []
        self.live: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.live.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    def cut(self) -> None:
        for client_side, server_side in self.live:
            client_side.transport.abort()
            self.held.append(server_side)
        self.live.clear()

    def release(self) -> None:
        for server_side in self.held:
            server_side.transport.abort()
        self.held.clear()

    async def stop(self) -> None:
        self.cut()
        self.release()
        assert self.server is not None
        self.server.close()


def _rejected(server: object, reason: str) -> float:
    value = server.service.metrics.registry.get_sample_value("ostinato_server_rejected_total", {"reason": reason})  # type: ignore[attr-defined]
    return float(value or 0)


async def test_stream_in_use_is_transient_and_a_retry_resumes_once_the_old_connection_closed(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        ws1, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("status",)))
        assert isinstance(ready, Ready)
        resume = Hello(sample_rate=16000, stream_id=ready.stream_id, resume_from_seq=0,
                       options={"resume_token": ready.info["resume_token"]})
        ws2, err = await _open(http, server.ws_url, resume)
        assert isinstance(err, ErrorFrame) and err.code == "stream_in_use" and err.error_class == "transient"
        assert not err.fatal and "retry" in err.hint and "15 s" in err.hint  # 1.5 x the 10 s heartbeat
        assert _rejected(server, "stream_in_use") == 1
        await ws1.close()
        async with asyncio.timeout(10):
            while server.service.streams.sessions[ready.stream_id].attached:
                await asyncio.sleep(0.01)
        await ws2.send_bytes(encode_frame(resume))  # the retry, on the same connection
        again = await _recv(ws2)
        assert isinstance(again, Ready) and again.info["resumed"]


async def test_client_retries_stream_in_use_until_the_dead_connection_is_dropped(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_resume_grace_s=20) as server:
        proxy = _Proxy(int(server.url.rsplit(":", 1)[1]))
        await proxy.start()
        try:
            client = StreamClient(f"ws://127.0.0.1:{proxy.port}/v1/stream", outputs=("features", "status"), config=FAST)
            await client.connect()
            await client.send_audio(audio[: 16000 * 2])
            await client.flush()
            proxy.cut()  # the client's socket dies; the server still sees its side open
            sending = asyncio.create_task(client.send_audio(audio[16000 * 2:]))
            async with asyncio.timeout(20):
                while _rejected(server, "stream_in_use") < 2:  # the client is retrying
                    await asyncio.sleep(0.01)
            proxy.release()  # now the server sees the old connection close
            await sending
            bye = await client.end()
            await client.close()
        finally:
            await proxy.stop()
    assert client.in_use_retries >= 2 and client.resumes == 1
    assert bye.reason == "end" and bye.summary["audio_s"] == len(audio) / 16000  # nothing lost, nothing doubled
    frames = [f for f in client.received if isinstance(f, FeaturesFrame)]
    starts = np.concatenate([f.start_sample + 320 * np.arange(f.num_frames) for f in frames])
    assert np.array_equal(starts, np.arange((len(audio) - 400) // 320 + 1) * 320)
    assert client.output_gaps == 0


async def test_output_frames_are_numbered_and_replayed_after_a_resume(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_resume_grace_s=20) as server, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("events", "features", "status"),
                                                           options={"status_interval_s": 0.2}))
        assert isinstance(ready, Ready) and ready.info["next_output_seq"] == 0 and ready.info["through_seq"] is None
        seq = await send_audio(ws, audio[: 16000 * 4])
        first = await _until(ws, FeaturesFrame)
        while sum(isinstance(f, FeaturesFrame) for f in first) < 5:
            first.append(await _recv(ws))
        seen = [f for f in first if getattr(f, "seq", None) is not None]
        assert [f.seq for f in seen] == list(range(len(seen)))  # type: ignore[attr-defined]
        last_seen = seen[-1].seq  # type: ignore[attr-defined]
        await ws.close()  # everything after last_seen may have been lost in flight
        async with asyncio.timeout(10):
            while server.service.streams.sessions[ready.stream_id].attached:
                await asyncio.sleep(0.01)
        ws2, resumed = await _open(http, server.ws_url, Hello(
            sample_rate=16000, stream_id=ready.stream_id, resume_from_seq=seq, last_output_seq=last_seen,
            options={"resume_token": ready.info["resume_token"]}))
        assert isinstance(resumed, Ready) and resumed.info["replay"]["after_seq"] == last_seen
        assert resumed.info["replay"]["lost"] == 0 and resumed.info["replay"]["replayed"] >= 0
        await ws2.send_bytes(encode_frame(End()))
        rest = await _until(ws2, Bye)
    numbered = [f.seq for f in rest if isinstance(f, Event | FeaturesFrame | Status)]
    assert numbered == list(range(last_seen + 1, last_seen + 1 + len(numbered)))  # nothing missing, nothing twice
    feats = [f for f in first + rest if isinstance(f, FeaturesFrame) and f.seq is not None]
    starts = np.concatenate([f.start_sample + 320 * np.arange(f.num_frames) for f in feats])
    assert len(set(starts.tolist())) == len(starts) == (4 * 16000 - 400) // 320 + 1
    statuses = [f for f in rest if isinstance(f, Status)]
    assert statuses[-1].through_seq == seq - 1  # at the end every audio frame is acknowledged


async def test_a_gap_beyond_the_replay_buffer_is_reported_and_counted(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_resume_grace_s=20, limits_replay_frames=3) as server, \
            aiohttp.ClientSession() as http:
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("features",)))
        assert isinstance(ready, Ready)
        seq = await send_audio(ws, audio[: 16000 * 3])
        got = [await _recv(ws) for _ in range(8)]  # 8 features frames reached us
        await ws.close()
        async with asyncio.timeout(10):
            while server.service.streams.sessions[ready.stream_id].attached:
                await asyncio.sleep(0.01)
        ws2, resumed = await _open(http, server.ws_url, Hello(
            sample_rate=16000, stream_id=ready.stream_id, resume_from_seq=seq, last_output_seq=0,
            options={"resume_token": ready.info["resume_token"]}))
        assert isinstance(resumed, Ready)
        replay = resumed.info["replay"]
        gap = await _recv(ws2)
        await ws2.send_bytes(encode_frame(End()))
        rest = await _until(ws2, Bye)
        lost_metric = server.service.metrics.registry.get_sample_value("ostinato_server_replayed_frames_total", {"result": "lost"})
    assert [f.seq for f in got] == list(range(8))  # type: ignore[attr-defined]
    assert replay["lost"] >= 8 - 1 - 3 and replay["lost_from_seq"] == 1 and lost_metric == replay["lost"]
    assert isinstance(gap, ErrorFrame) and gap.code == "output_gap" and not gap.fatal and gap.error_class == "transient"
    numbered = [f.seq for f in rest if isinstance(f, FeaturesFrame)]
    assert numbered[0] == 1 + replay["lost"] and numbered == list(range(numbered[0], numbered[0] + len(numbered)))
    bye = rest[-1]
    assert isinstance(bye, Bye) and bye.summary["dropped"]["replay_lost"] == replay["lost"]


async def test_flush_answers_after_all_earlier_audio_produced_its_features(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir) as server:
        with slowed_model(server, 0.02):  # the real model, made slow
            client = StreamClient(server.ws_url, outputs=("features", "status"), config=FAST,
                                  options={"status_interval_s": 0.1, "match": False})  # periodic statuses race the answer
            await client.connect()
            for part in range(3):
                await client.send_audio(audio[part * 16000 * 2: (part + 1) * 16000 * 2])
                status = await client.flush()
                features = sum(f.num_frames for f in client.received if isinstance(f, FeaturesFrame))
                assert status.through_seq == client.resend.acked_seq == 10 * (part + 1) * 2 - 1
                assert features == status.frames == (part + 1) * 2 * 50 - 5  # all complete windows, right after the ack
                assert len(client.resend) == 0  # acknowledged audio is no longer kept for resending
            await client.end()
            await client.close()


async def test_flush_on_a_drop_policy_stream_acknowledges_dropped_audio_too(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_max_messages_per_s=10_000, limits_message_burst=10_000) as server:
        client = StreamClient(server.ws_url, outputs=("features", "status"), options={"overflow": "drop_newest", "match": False},
                              config=dataclasses.replace(FAST, block_ms=10))
        await client.connect()
        await client.send_audio(np.tile(audio, 2))  # 2400 blocks of 10 ms as fast as possible: the queue overflows
        async with asyncio.timeout(60):
            status = await client.flush()  # answered although some blocks never reached the pipeline
        bye = await client.end()
        await client.close()
    assert status.through_seq == 2399 and bye.summary["dropped"].get("drop_newest", 0) > 0
