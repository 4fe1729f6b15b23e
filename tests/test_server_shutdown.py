"""``ostinato serve`` as a real subprocess: ``stream-to`` against it, and a graceful SIGTERM
(open streams get ``bye``, the process drains and exits 0)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from server_harness import planted_repeats, write_wav

from ostinato.client import ClientConfig, StreamClient


async def _start_serve(model_dir: Path, *extra: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ostinato", "serve", "--model", str(model_dir), "--provider", "cpu", "--port", "0", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert "ostinato serving http://" in line, line
    return proc, line.split()[2]


async def test_stream_to_cli_then_sigterm_drains_and_exits_0(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    audio, repeats = planted_repeats()
    wav = write_wav(tmp_path / "planted.wav", audio)
    db = tmp_path / "patterns.db"
    proc, url = await _start_serve(tiny_w2v_dir, "--library", str(db))
    try:
        ws_url = url.replace("http://", "ws://")
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ostinato", "stream-to", ws_url, "--source", f"file:{wav}", "--fast", "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode == 0, err.decode()
        events = [json.loads(line) for line in out.decode().splitlines()]
        assert any(e["event"] == "match" and abs(e["start_s"] - repeats[1][0]) < 0.5 for e in events), events
        assert "12.0 s of audio" in err.decode()

        # a live stream is open when SIGTERM arrives: it must get `bye` (reason shutdown)
        client = StreamClient(ws_url + "/v1/stream", outputs=("status",), config=ClientConfig(max_retries=0))
        await client.connect()
        await client.send_audio(np.zeros(16000, np.float32))
        await client.flush()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        frames = [f async for f in client]
        await client.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    bye = frames[-1]
    assert bye.type == "bye" and bye.reason == "shutdown" and bye.summary["audio_s"] == 1.0  # type: ignore[union-attr]
    assert proc.stdout is not None and "ostinato stopped" in (await proc.stdout.read()).decode()
    # the library was flushed: every match the CLI saw is in the file, under the id it was sent with
    from ostinato.stream.library import PatternLibrary

    with PatternLibrary(db, readonly=True) as library:
        for event in events:
            if event["event"] == "match":
                assert library.get(event["pattern_id"]).occurrence_count >= 2


async def test_serve_refuses_a_bad_token_file_and_warns_on_exposed_bind(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    short = tmp_path / "token"
    short.write_text("abc")
    bad = subprocess.run([sys.executable, "-m", "ostinato", "serve", "--model", str(tiny_w2v_dir), "--token-file", str(short)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected >= 16" in bad.stderr and "secrets.token_urlsafe" in bad.stderr
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning comes first, then a
    # clean error instead of a traceback (and nothing gets exposed by the test)
    exposed = subprocess.run([sys.executable, "-m", "ostinato", "serve", "--model", str(tiny_w2v_dir), "--host", "192.0.2.1"],
                             capture_output=True, text=True, timeout=60)
    assert "warning: binding 192.0.2.1 without --token-file" in exposed.stderr
    assert exposed.returncode == 2 and "error: cannot listen on 192.0.2.1:8765" in exposed.stderr
    assert "Traceback" not in exposed.stderr
