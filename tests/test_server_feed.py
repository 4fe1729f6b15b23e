"""Audio feeds: ``ostinato run --source ws://…/v1/stream?file=NAME`` (NetSource, role
"receive") consumes a server media file from a real ``ostinato serve`` application on
127.0.0.1, with the same features as running on the file itself; feeds resume by seq."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import numpy as np
from server_harness import planted_repeats, running_server, write_wav

from ostinato.stream.source_net import NetSource
from ostinato.stream.wire import Audio, Bye, End, ErrorFrame, Hello, Ready, decode_frame, decode_pcm, encode_frame


async def _run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ostinato", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def test_ostinato_run_consumes_a_served_file_feed_end_to_end(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    audio, _ = planted_repeats()
    stereo = np.stack([audio[:16000 * 4], audio[:16000 * 4]], axis=1)
    (tmp_path / "media").mkdir()
    wav = write_wav(tmp_path / "media" / "planted.wav", stereo, 16000)
    common = ["--model", str(tiny_w2v_dir), "--provider", "cpu", "--quiet"]
    async with running_server(tiny_w2v_dir, media_dir=tmp_path / "media") as server:
        url = server.ws_url + "?file=planted.wav&pace=fast"
        code, out = await _run_cli("run", "--source", url, *common, "--out", str(tmp_path / "feed.npy"))
        assert code == 0, out
    code, out = await _run_cli("run", "--source", f"file:{wav}", *common, "--out", str(tmp_path / "file.npy"))
    assert code == 0, out
    fed, direct = np.load(tmp_path / "feed.npy"), np.load(tmp_path / "file.npy")
    assert fed.shape == direct.shape and fed.shape[0] == (4 * 16000 - 400) // 320 + 1
    np.testing.assert_array_equal(fed, direct)  # the same samples arrived, nothing lost or doubled


async def test_feed_frames_resume_and_errors(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    audio, _ = planted_repeats()
    (tmp_path / "media").mkdir()
    write_wav(tmp_path / "media" / "planted.wav", audio[:16000 * 2], 16000)
    async with running_server(tiny_w2v_dir, media_dir=tmp_path / "media") as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        await ws.send_bytes(encode_frame(Hello(sample_rate=16000, role="receive", resume_from_seq=15,
                                               options={"file": "planted.wav", "pace": "fast"})))
        frames = []
        async for msg in ws:
            frames.append(decode_frame(msg.data))
        ready, audio_frames = frames[0], [f for f in frames if isinstance(f, Audio)]
        assert isinstance(ready, Ready) and ready.info["block_samples"] == 1600 and ready.info["next_seq"] == 15
        assert [f.seq for f in audio_frames] == list(range(15, 20)) and audio_frames[0].start_sample == 15 * 1600
        got = np.concatenate([decode_pcm(f.pcm, "f32le", 1)[:, 0] for f in audio_frames])
        np.testing.assert_allclose(got, audio[15 * 1600: 2 * 16000], atol=1 / 32768)  # 16-bit WAV
        assert isinstance(frames[-2], End) and isinstance(frames[-1], Bye) and ws.close_code == 1000
        ws = await http.ws_connect(server.ws_url + "?file=nope.wav")
        await ws.send_bytes(encode_frame(Hello(sample_rate=16000, role="receive")))
        err = decode_frame((await ws.receive(timeout=5)).data)
        assert isinstance(err, ErrorFrame) and "not a server media file" in err.message and not err.fatal
        # NetSource, the client `ostinato run` uses, reads the real-time feed to the end
        source = NetSource(server.ws_url + "?file=planted.wav")
        chunks = [c async for c in source.chunks()]
    assert sum(c.num_samples for c in chunks) == 2 * 16000 and source.gap_samples == 0


async def test_a_feed_gets_bye_shutdown_when_the_server_stops(tmp_path: Path) -> None:
    from ostinato.server import ServerConfig, start_server

    audio, _ = planted_repeats()
    (tmp_path / "media").mkdir()
    write_wav(tmp_path / "media" / "planted.wav", audio, 16000)  # 12 s, played in real time
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, media_dir=tmp_path / "media"))
    stopped = False
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.ws_url + "?file=planted.wav")
            await ws.send_bytes(encode_frame(Hello(sample_rate=16000, role="receive")))
            assert isinstance(decode_frame((await ws.receive(timeout=5)).data), Ready)
            assert isinstance(decode_frame((await ws.receive(timeout=5)).data), Audio)
            stop = asyncio.create_task(server.stop())
            stopped = True
            frames = [decode_frame(msg.data) async for msg in ws]
            await stop
    finally:
        if not stopped:
            await server.stop()
    assert isinstance(frames[-1], Bye) and frames[-1].reason == "shutdown"
    assert not any(isinstance(f, End) for f in frames) and len(frames) < 100  # not played to the end


async def test_a_feed_at_the_stream_limit_is_refused_and_counted(tmp_path: Path) -> None:
    audio, _ = planted_repeats()
    (tmp_path / "media").mkdir()
    write_wav(tmp_path / "media" / "planted.wav", audio, 16000)
    async with running_server(None, media_dir=tmp_path / "media", limits_max_streams=1) as server, \
            aiohttp.ClientSession() as http:
        first = await http.ws_connect(server.ws_url + "?file=planted.wav")  # real-time: holds the only slot
        await first.send_bytes(encode_frame(Hello(sample_rate=16000, role="receive")))
        assert isinstance(decode_frame((await first.receive(timeout=5)).data), Ready)
        second = await http.ws_connect(server.ws_url + "?file=planted.wav")
        await second.send_bytes(encode_frame(Hello(sample_rate=16000, role="receive")))
        err = decode_frame((await second.receive(timeout=5)).data)
        assert isinstance(err, ErrorFrame) and err.code == "too_many_streams" and err.error_class == "transient"
        assert "1 streams are open; the limit is 1" in err.message
        assert server.service.metrics.rejected.labels("too_many_streams")._value.get() == 1  # once per refusal
        await first.close()
