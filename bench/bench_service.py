"""Load test of ``ostinato serve`` on loopback (bounded in time).

Starts the service as a subprocess, then for each client count N runs N clients that stream
audio in real time for T seconds (100 ms blocks, planted repeats so the matcher fires, features
requested so the model runs) while one extra client sends garbage (corrupted frames, random
bytes, oversized messages). Reports per phase: streams held to the end, p50/p99 latency of
feature frames and of match events, errors seen by good clients, garbage answered, /readyz
failures, server RSS, and drops. Prints JSON lines and a markdown table.

Example::

    python bench/bench_service.py --model ~/.cache/ostinato/models/random-base-int8 --clients 1,4,8 --duration-s 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np

from ostinato.stream.wire import Audio, End, Hello, decode_frame, encode_frame, encode_pcm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_harness import SAMPLE_RATE, melody  # noqa: E402  (the test audio, shared)


def _audio(seed: int, duration_s: float) -> np.ndarray:
    """Filler melodies with one 2 s motif repeated every 7 s."""
    motif = melody(seed, 2.0)
    parts, total = [], 0.0
    k = 0
    while total < duration_s:
        parts += [melody(seed * 100 + k, 5.0), motif]
        total += 7.0
        k += 1
    return np.concatenate(parts)[: int(duration_s * SAMPLE_RATE)]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


async def _client(url: str, seed: int, duration_s: float, block_ms: int, overflow: str, stats: dict[str, Any]) -> None:
    audio = _audio(seed, duration_s)
    block = SAMPLE_RATE * block_ms // 1000
    sent_at: list[float] = []
    result = {"held": False, "errors": 0, "feature_latency_s": [], "event_latency_s": [], "events": 0, "dropped": {}}
    stats["clients"].append(result)
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, max_msg_size=0)
        except aiohttp.ClientError:
            result["errors"] += 1
            return
        await ws.send_bytes(encode_frame(Hello(sample_rate=SAMPLE_RATE, outputs=("events", "features", "status"),
                                               options={"features_hz": 10, "features_dtype": "f16",
                                                        "overflow": overflow})))

        async def receive() -> None:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                now = time.monotonic()
                f = decode_frame(msg.data)
                if f.type == "features" and f.num_frames:  # type: ignore[union-attr]
                    last = f.start_sample + (f.num_frames - 1) * f.frame_stride_samples + 400  # type: ignore[union-attr]
                    idx = min(len(sent_at) - 1, (last - 1) // block)
                    result["feature_latency_s"].append(now - sent_at[idx])
                elif f.type == "event":
                    result["events"] += 1
                    idx = min(len(sent_at) - 1, int(f.event["end_s"] * SAMPLE_RATE) // block)  # type: ignore[union-attr]
                    result["event_latency_s"].append(now - sent_at[idx])
                elif f.type == "error":
                    result["errors"] += 1
                elif f.type == "bye":
                    result["held"] = f.reason == "end"  # type: ignore[union-attr]
                    result["dropped"] = f.summary.get("dropped", {})  # type: ignore[union-attr]
                    return

        first = await ws.receive(timeout=10)
        if first.type is not aiohttp.WSMsgType.BINARY or decode_frame(first.data).type != "ready":
            result["errors"] += 1
            return
        reader = asyncio.create_task(receive())
        start = time.monotonic()
        for k, i in enumerate(range(0, len(audio), block)):
            await asyncio.sleep(max(0.0, start + k * block_ms / 1000 - time.monotonic()))
            sent_at.append(time.monotonic())
            try:
                await ws.send_bytes(encode_frame(Audio(seq=k, pcm=encode_pcm(audio[i:i + block], "f32le"))))
            except ConnectionError:
                result["errors"] += 1
                break
        await ws.send_bytes(encode_frame(End()))
        try:
            await asyncio.wait_for(reader, 30)
        except TimeoutError:
            result["errors"] += 1
        await ws.close()


async def _garbage(url: str, duration_s: float, stats: dict[str, Any]) -> None:
    rng = random.Random(0)
    answered = sent = 0
    good = encode_frame(Audio(seq=0, pcm=encode_pcm(np.zeros(1600, np.float32), "f32le")))
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            try:
                ws = await http.ws_connect(url, max_msg_size=0)
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
                continue

            async def drain(ws: aiohttp.ClientWebSocketResponse = ws) -> None:
                nonlocal answered
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        answered += 1

            reader = asyncio.create_task(drain())
            await ws.send_bytes(encode_frame(Hello(sample_rate=SAMPLE_RATE)))
            while time.monotonic() < deadline and not ws.closed:
                kind = rng.random()
                if kind < 0.4:
                    blob = bytearray(good)
                    blob[rng.randrange(len(blob))] = rng.randrange(256)
                    data = bytes(blob)
                elif kind < 0.8:
                    data = rng.randbytes(rng.randrange(1, 200))
                elif kind < 0.9:
                    data = msgpack.packb({"v": 1, "type": "audio", "seq": -1, "pcm": b"\x00"})
                else:
                    data = b"\x00" * 2_000_000  # over the soft limit
                try:
                    await ws.send_bytes(data)
                except ConnectionError:
                    break
                sent += 1
                await asyncio.sleep(0.02)
            await ws.close()
            reader.cancel()
    stats["garbage"] = {"sent": sent, "answered": answered}


async def _watch(base: str, pid: int, duration_s: float, stats: dict[str, Any]) -> None:
    not_ready = polls = 0
    rss: list[float] = []
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            polls += 1
            try:
                async with http.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    not_ready += r.status != 200
            except (aiohttp.ClientError, TimeoutError):
                not_ready += 1
            rss.append(_rss_bytes(pid))
            await asyncio.sleep(0.5)
    stats["readyz"] = {"polls": polls, "not_ready": not_ready}
    stats["rss_mb"] = {"start": rss[0] / 1e6 if rss else None, "peak": max(rss) / 1e6 if rss else None}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (contention-independent cost)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


async def _phase(base: str, pid: int, clients: int, duration_s: float, block_ms: int, garbage: bool,
                 overflow: str) -> dict[str, Any]:
    url = base.replace("http://", "ws://") + "/v1/stream"
    stats: dict[str, Any] = {"clients": []}
    tasks = [_client(url, seed + 1, duration_s, block_ms, overflow, stats) for seed in range(clients)]
    if garbage:
        tasks.append(_garbage(url, duration_s, stats))
    tasks.append(_watch(base, pid, duration_s + 3, stats))
    started = time.monotonic()
    load_1m = os.getloadavg()[0]
    cpu_before = _cpu_s(pid)
    await asyncio.gather(*tasks)
    server_cpu_s = _cpu_s(pid) - cpu_before
    feats = [x for c in stats["clients"] for x in c["feature_latency_s"]]
    events = [x for c in stats["clients"] for x in c["event_latency_s"]]
    drops: dict[str, int] = {}
    for c in stats["clients"]:
        for k, v in c["dropped"].items():
            drops[k] = drops.get(k, 0) + v
    return {
        "bench": "service", "clients": clients, "duration_s": duration_s, "wall_s": round(time.monotonic() - started, 2),
        "held_streams": sum(c["held"] for c in stats["clients"]),
        "feature_latency_p50_ms": _ms(_pct(feats, 50)), "feature_latency_p99_ms": _ms(_pct(feats, 99)),
        "event_latency_p50_ms": _ms(_pct(events, 50)), "event_latency_p99_ms": _ms(_pct(events, 99)),
        "events": sum(c["events"] for c in stats["clients"]), "errors": sum(c["errors"] for c in stats["clients"]),
        "garbage_sent": stats.get("garbage", {}).get("sent", 0), "garbage_answered": stats.get("garbage", {}).get("answered", 0),
        "readyz_not_200": stats["readyz"]["not_ready"], "readyz_polls": stats["readyz"]["polls"],
        "rss_mb_start": _round(stats["rss_mb"]["start"]), "rss_mb_peak": _round(stats["rss_mb"]["peak"]),
        "drops": drops,
        "server_cpu_s": round(server_cpu_s, 2),
        "server_cpu_per_stream_audio_s": round(server_cpu_s / (clients * duration_s), 4),
        "load_avg_1m_at_start": round(load_1m, 2), "cpus": os.cpu_count(),
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


async def _main(args: argparse.Namespace) -> int:
    counts = [int(x) for x in args.clients.split(",")]
    profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
    cmd = [sys.executable, *profile, "-m", "ostinato", "serve", "--model", str(args.model), "--provider", args.provider,
           "--host", "127.0.0.1", "--port", "0", "--max-streams", str(max(counts) + 4)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                                                env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
    base = line.split()[2]
    rows = []
    try:
        for n in counts:
            row = await _phase(base, proc.pid, n, args.duration_s, args.block_ms, not args.no_garbage, args.overflow)
            row["overflow"] = args.overflow
            row["model"] = Path(args.model).name
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        proc.terminate()
        code = await proc.wait()
    print(f"\nserver exit code after SIGTERM: {code}")
    print("\n| clients | held | feature p50 / p99 ms | event p50 / p99 ms | events | errors | garbage sent / answered "
          "| /readyz not 200 | RSS MB start / peak | server CPU s per stream-audio s | load avg | drops |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['held_streams']}/{r['clients']} | {r['feature_latency_p50_ms']} / {r['feature_latency_p99_ms']} | "
              f"{r['event_latency_p50_ms']} / {r['event_latency_p99_ms']} | {r['events']} | {r['errors']} | "
              f"{r['garbage_sent']} / {r['garbage_answered']} | {r['readyz_not_200']}/{r['readyz_polls']} | "
              f"{r['rss_mb_start']} / {r['rss_mb_peak']} | {r['server_cpu_per_stream_audio_s']} | {r['load_avg_1m_at_start']} | "
              f"{r['drops'] or 'none'} |")
    if len(rows) > 1 and rows[0]["feature_latency_p99_ms"]:
        ratio = rows[-1]["feature_latency_p99_ms"] / rows[0]["feature_latency_p99_ms"]
        print(f"\nfeature p99 latency at {rows[-1]['clients']} clients vs {rows[0]['clients']}: {ratio:.2f}x (same run)")
    return 0


def main() -> int:
    """Parse arguments and run the phases."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="exported model directory")
    p.add_argument("--provider", default="cpu")
    p.add_argument("--clients", default="1,4,8", help="comma-separated client counts, one phase each")
    p.add_argument("--duration-s", type=float, default=20.0, help="audio each client streams per phase (real time)")
    p.add_argument("--block-ms", type=int, default=100)
    p.add_argument("--no-garbage", action="store_true", help="leave out the garbage-sending client")
    p.add_argument("--profile", type=Path, default=None, help="run the server under cProfile, stats written here")
    p.add_argument("--overflow", default="drop_oldest", choices=("block", "drop_oldest", "drop_newest"),
                   help="stream policy (live clients: drop_oldest, as a microphone would)")
    return asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
