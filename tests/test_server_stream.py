"""The WebSocket stream endpoint on a real loopback server: features identical to offline
processing, match events on planted repeats, flush, backpressure policies, resume, limits,
and isolation between streams."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import aiohttp
import numpy as np
from server_harness import planted_repeats, running_server, send_audio, slowed_model

from ostinato.models import StreamingConfig
from ostinato.runtime import Wav2Vec2Model
from ostinato.runtime.w2v_frontend import FrontEndConfig
from ostinato.runtime.w2v_kv import KVConfig
from ostinato.stream.frontend_cache import ConvFrameCache
from ostinato.stream.kv_cache import KVCache
from ostinato.stream.windowing import Windower
from ostinato.stream.wire import (
    Audio,
    Bye,
    End,
    ErrorFrame,
    Event,
    FeaturesFrame,
    Flush,
    Frame,
    Hello,
    Ready,
    Status,
    decode_frame,
    encode_frame,
    encode_pcm,
)


async def _open(http: aiohttp.ClientSession, url: str, hello: Hello) -> tuple[aiohttp.ClientWebSocketResponse, Ready]:
    ws = await http.ws_connect(url)
    await ws.send_bytes(encode_frame(hello))
    ready = decode_frame((await ws.receive(timeout=10)).data)
    assert isinstance(ready, Ready), ready
    return ws, ready


async def _until_bye(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 30) -> list[Frame]:
    frames: list[Frame] = []
    async with asyncio.timeout(timeout_s):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                frames.append(decode_frame(msg.data))
                if isinstance(frames[-1], Bye):
                    break
    return frames


async def test_streamed_features_equal_offline_frames_and_repeats_are_flagged(tiny_w2v_dir: Path) -> None:
    audio, repeats = planted_repeats()
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("events", "features", "status")))
        assert ready.info["window"] == {"hop_samples": 1600, "left_context_samples": 320, "right_context_samples": 0,
                                        "window_samples": 2000}  # the seed configuration 1600/400
        await send_audio(ws, audio)
        await ws.send_bytes(encode_frame(End()))
        frames = await _until_bye(ws)
    feats = [f for f in frames if isinstance(f, FeaturesFrame)]
    starts = np.concatenate([f.start_sample + 320 * np.arange(f.num_frames) for f in feats])
    streamed = np.concatenate([f.to_array() for f in feats])
    with Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu") as model:
        offline = model.features(audio, 16000)
        # reference: the model run on each window the seed geometry cuts, core frames kept; the
        # split model streams through the conv-frame cache with running statistics and, with
        # encoder_cached.onnx, the transformer over each window's new frames with the
        # left-context K/V cache (issue 4): the same classes, one window at a time; on the K/V path
        # a stream's first window is cut once its core and right context arrived (short_start)
        windower = Windower(dataclasses.replace(StreamingConfig().windower_config(), short_start=True))
        windows = windower.push(audio) + windower.flush()
        front, kv = ConvFrameCache(FrontEndConfig(), 320), KVCache(KVConfig(), 320)
        reference = np.concatenate([
            kv.encode(model, [w], front.conv_batch(model, [w]), "last_hidden_state", front)[0][0] for w in windows])
        await front.close()
    np.testing.assert_array_equal(starts, offline.start_samples)  # no frame missing or duplicated
    np.testing.assert_allclose(streamed, reference, atol=1e-4)
    events = [f.event for f in frames if isinstance(f, Event) and f.event["event"] == "match"]
    assert any(abs(e["start_s"] - repeats[1][0]) < 0.5 and abs(e["first_start_s"] - repeats[0][0]) < 0.5 for e in events), events
    bye = frames[-1]
    assert isinstance(bye, Bye) and bye.reason == "end" and bye.summary["audio_s"] == len(audio) / 16000
    assert bye.summary["frames"] == len(offline) and bye.summary["dropped"] == {}


async def test_resampled_s16le_stereo_input_and_flush_barrier(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    stereo_8k = np.stack([audio[::2], audio[::2]], axis=1)[: 8000 * 4]
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        ws, _ = await _open(http, server.ws_url, Hello(sample_rate=8000, encoding="s16le", channels=2,
                                                        outputs=("features", "status"), options={"status_interval_s": 60}))
        seq = 0
        for i in range(0, len(stereo_8k), 800):
            await ws.send_bytes(encode_frame(Audio(seq=seq, pcm=encode_pcm(stereo_8k[i:i + 800], "s16le"))))
            seq += 1
        await ws.send_bytes(encode_frame(Flush()))
        async with asyncio.timeout(20):
            while True:
                frame = decode_frame((await ws.receive()).data)
                if isinstance(frame, Status):
                    break
        # flush answers once every fed sample has been through the pipeline
        assert frame.audio_s >= 3.9 and frame.frames == (int(frame.audio_s * 16000) // 1600) * 5
        assert -40 < frame.level_dbfs < 0
        await ws.send_bytes(encode_frame(End()))
        frames = await _until_bye(ws)
    bye = frames[-1]
    assert isinstance(bye, Bye) and bye.summary["audio_s"] == 4.0  # 8 kHz stereo -> 16 kHz mono, nothing lost
    assert bye.summary["frames"] == (4 * 16000 - 400) // 320 + 1


async def test_drop_policy_counts_drops_in_status(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_max_messages_per_s=10_000, limits_message_burst=10_000) as server, \
            aiohttp.ClientSession() as http:
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("features", "status"),
                                                           options={"overflow": "drop_newest", "match": False}))
        assert ready.info["overflow"] == "drop_newest"
        # 12 s in 160-sample blocks, as fast as possible: the 10-block queue overflows
        await send_audio(ws, np.tile(audio, 2), block=160)
        await ws.send_bytes(encode_frame(End()))
        frames = await _until_bye(ws)
    bye = frames[-1]
    assert isinstance(bye, Bye)
    dropped = bye.summary["dropped"].get("drop_newest", 0)
    assert dropped > 0
    # every block is accounted for: processed audio + dropped blocks = sent audio
    assert abs(bye.summary["audio_s"] + dropped * 0.01 - 2 * len(audio) / 16000) < 0.02


async def test_stream_limit_and_other_streams_unaffected_by_garbage(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_max_streams=2) as server, aiohttp.ClientSession() as http:
        good, _ = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("features",)))
        bad, _ = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("status",)))
        third = await http.ws_connect(server.ws_url)
        await third.send_bytes(encode_frame(Hello(sample_rate=16000)))
        err = decode_frame((await third.receive(timeout=5)).data)
        assert isinstance(err, ErrorFrame) and err.code == "too_many_streams" and err.error_class == "transient" and err.fatal
        assert (await third.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE and third.close_code == 1013
        assert server.service.metrics.rejected.labels("too_many_streams")._value.get() == 1  # counted once

        async def garbage() -> None:
            for i in range(30):
                await bad.send_bytes(bytes([0xC1, i]) * 10)  # 0xC1 is never valid msgpack

        await asyncio.gather(garbage(), send_audio(good, audio[: 16000 * 4]))
        await good.send_bytes(encode_frame(End()))
        frames = await _until_bye(good)
        errors = [decode_frame((await bad.receive(timeout=5)).data) for _ in range(30)]
    assert all(isinstance(e, ErrorFrame) and e.code == "protocol_error" and not e.fatal for e in errors)
    assert sum(f.num_frames for f in frames if isinstance(f, FeaturesFrame)) == 199
    assert not any(isinstance(f, ErrorFrame) for f in frames)


async def test_resume_after_connection_loss_within_grace(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_resume_grace_s=10.0) as server, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("features",)))
        seq = await send_audio(ws, audio[: 16000 * 2])
        await ws.close()  # the client vanishes without `end`
        await asyncio.sleep(0.2)
        assert server.service.streams.active_count() == 1
        # a stranger cannot take the stream over
        ws2 = await http.ws_connect(server.ws_url)
        await ws2.send_bytes(encode_frame(Hello(sample_rate=16000, stream_id=ready.stream_id, options={"resume_token": "guess"})))
        err = decode_frame((await ws2.receive(timeout=5)).data)
        assert isinstance(err, ErrorFrame) and err.code == "resume_refused"
        await ws2.send_bytes(encode_frame(Hello(sample_rate=16000, stream_id=ready.stream_id, resume_from_seq=seq,
                                                options={"resume_token": ready.info["resume_token"]})))
        resumed = decode_frame((await ws2.receive(timeout=5)).data)
        assert isinstance(resumed, Ready) and resumed.info["resumed"] and resumed.info["next_seq"] == seq
        # resending a block the server already has is harmless (skipped as a duplicate)
        await ws2.send_bytes(encode_frame(Audio(seq=seq - 1, pcm=encode_pcm(audio[:1600], "f32le"))))
        await send_audio(ws2, audio[16000 * 2: 16000 * 4], first_seq=seq)
        await ws2.send_bytes(encode_frame(End()))
        frames = await _until_bye(ws2)
    feats = [f for f in frames if isinstance(f, FeaturesFrame)]
    bye = frames[-1]
    assert isinstance(bye, Bye) and bye.summary["audio_s"] == 4.0 and bye.summary["dropped"] == {"duplicate": 1}
    # features produced while disconnected were queued and delivered after the resume
    assert feats[0].start_sample == 0 and sum(f.num_frames for f in feats) == 199


async def test_expired_stream_cannot_be_resumed(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir, limits_resume_grace_s=0.2) as server, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000))
        await ws.close()
        await asyncio.sleep(0.8)
        assert server.service.streams.active_count() == 0
        ws2 = await http.ws_connect(server.ws_url)
        await ws2.send_bytes(encode_frame(Hello(sample_rate=16000, stream_id=ready.stream_id,
                                                options={"resume_token": ready.info["resume_token"]})))
        err = decode_frame((await ws2.receive(timeout=5)).data)
    assert isinstance(err, ErrorFrame) and err.code == "stream_expired" and err.error_class == "permanent"
    assert "new stream" in err.hint


async def test_server_side_file_stream(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    from server_harness import write_wav

    audio, _ = planted_repeats()
    write_wav(tmp_path / "planted.wav", audio[: 16000 * 2])
    async with running_server(tiny_w2v_dir, media_dir=tmp_path) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/v1/media") as r:
            names = [f["name"] for f in (await r.json())["files"]]
        assert "planted.wav" in names and "demo.wav" in names
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("status",),
                                                           options={"file": "planted.wav", "status_interval_s": 0.5}))
        assert ready.info["file"] == "planted.wav"
        frames = await _until_bye(ws)
        ws2 = await http.ws_connect(server.ws_url)
        await ws2.send_bytes(encode_frame(Hello(sample_rate=16000, options={"file": "../../etc/passwd"})))
        err = decode_frame((await ws2.receive(timeout=5)).data)
    statuses = [f for f in frames if isinstance(f, Status)]
    assert len(statuses) >= 3 and statuses[-1].audio_s == 2.0  # played in real time, ~2 s
    assert isinstance(err, ErrorFrame) and "not a server media file" in err.message


async def test_block_policy_pushes_back_over_tcp_and_loses_nothing(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir, limits_max_messages_per_s=10_000, limits_message_burst=10_000) as server, \
            aiohttp.ClientSession() as http:
        with slowed_model(server, 0.03):  # the real model, made slow
            # 48 kHz stereo f32: 13.8 MB for 36 s of audio, more than the socket buffers hold
            ws, ready = await _open(http, server.ws_url, Hello(sample_rate=48000, channels=2, outputs=("features",),
                                                               options={"match": False}))
            assert ready.info["overflow"] == "block"
            session = server.service.streams.sessions[ready.stream_id]
            loud = np.repeat(np.tile(audio, 3), 3)  # 36 s at 48 kHz
            await send_audio(ws, np.stack([loud, loud], axis=1), block=4800)  # as fast as TCP takes it
            await ws.send_bytes(encode_frame(End()))
            frames = await _until_bye(ws, timeout_s=60)
    bye = frames[-1]
    assert isinstance(bye, Bye) and bye.summary["dropped"] == {} and bye.summary["audio_s"] == 36.0
    assert session.input.max_depth == session.input.capacity  # the queue filled ...
    # ... and the socket reader waited for space instead of buffering or dropping: reading stopped, so
    # TCP flow control held the sender back (a wall-clock bound here flaked on loaded CI machines)
    assert session.input.put_waits > 0
    assert sum(f.num_frames for f in frames if isinstance(f, FeaturesFrame)) == (36 * 16000 - 400) // 320 + 1


async def test_a_failed_session_frees_the_shared_stage_state(tiny_w2v_dir: Path) -> None:
    # A session cancelled before its end marker (engine failure, abort timeout) must still let
    # the shared stage forget the stream's conv-frame cache and K/V past.
    audio, _ = planted_repeats()
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("features",)))
        await send_audio(ws, audio[: 16000 * 3])
        async with asyncio.timeout(30):
            while not isinstance(decode_frame((await ws.receive()).data), FeaturesFrame):
                pass
        engine = server.service.streams.engines["tiny"]
        stage = engine.stage
        assert stage.frontend_cache is not None and stage.frontend_cache.streams == 1
        server.service.streams.sessions[ready.stream_id].fail()
        async with asyncio.timeout(30):
            while stage.frontend_cache.streams or (stage.kv_cache is not None and stage.kv_cache.streams):
                await asyncio.sleep(0.05)
        assert engine.failed is None  # the engine goes on serving other streams
        other, _ = await _open(http, server.ws_url, Hello(sample_rate=16000, outputs=("features",)))
        await send_audio(other, audio[: 16000 * 2])
        async with asyncio.timeout(30):
            while not isinstance(decode_frame((await other.receive()).data), FeaturesFrame):
                pass
