"""``ostinato stream-to ws://HOST:PORT --source mic|file:PATH``: stream audio to a server.

Events arrive as JSON lines on stdout (or ``--out``), status on stderr. The client reconnects
and resumes the stream when the connection drops (see :mod:`ostinato.client`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
from pathlib import Path
from typing import IO, Any

__all__ = ["register", "run", "stream_url"]


def register(sub: Any) -> None:
    """Add the ``stream-to`` subcommand."""
    p = sub.add_parser("stream-to", help="stream audio to an `ostinato serve` instance and print its events")
    p.add_argument("url", help="server URL, e.g. ws://127.0.0.1:8765 (the /v1/stream path is added when missing)")
    p.add_argument("--source", required=True, help="mic, mic:DEVICE or file:PATH (files are paced in real time)")
    p.add_argument("--token-file", type=Path, default=None, help="file holding the server's bearer token")
    p.add_argument("--model", default=None, help="model name on the server (default: its default model)")
    p.add_argument("--features", action="store_true", help="also receive feature frames (counted in the summary)")
    p.add_argument("--fast", action="store_true", help="send files as fast as the server takes them (not real time)")
    p.add_argument("--out", type=Path, default=None, help="write events as JSON lines here instead of stdout")
    p.add_argument("--timeout-ms", type=int, default=5000, help="connect timeout (default 5000)")
    p.add_argument("--max-retries", type=int, default=3, help="connection retries (default 3)")
    p.add_argument("--quiet", action="store_true", help="no status lines on stderr")
    p.set_defaults(func=run)


def stream_url(url: str) -> str:
    """Normalise a server URL to its ``/v1/stream`` WebSocket URL.

    Raises:
        ConfigError: If the scheme is not ws/wss/http/https.
    """
    from ostinato.stream.errors import ConfigError

    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(f"url={url!r}; expected ws://HOST:PORT[/v1/stream] (or wss://)")
    path = parts.path if parts.path not in ("", "/") else "/v1/stream"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def run(args: argparse.Namespace) -> int:
    """Stream until the source ends (or Ctrl-C), then print the summary."""
    return asyncio.run(_stream(args))


async def _stream(args: argparse.Namespace) -> int:
    from ostinato.auth import load_token
    from ostinato.client import ClientConfig, StreamClient
    from ostinato.stream.sources import open_source

    token = load_token(args.token_file) if args.token_file else None
    config = ClientConfig(timeout_ms=args.timeout_ms, max_retries=args.max_retries, token=token)
    outputs = ("events", "status", "features") if args.features else ("events", "status")
    options: dict[str, Any] = {"model": args.model} if args.model else {}
    source = open_source(args.source, realtime=not args.fast)
    if source.live:  # a microphone cannot wait: the server drops (and counts) instead of lagging
        options["overflow"] = "drop_oldest"
    out: IO[str] = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    counts = {"events": 0, "features": 0}
    try:
        async with StreamClient(stream_url(args.url), sample_rate=16000, outputs=outputs, options=options, config=config) as client:
            ready = client.ready
            if not args.quiet and ready is not None:
                weights = " (RANDOM WEIGHTS)" if ready.info.get("random_weights") else ""
                print(f"stream {ready.stream_id} on model {ready.info.get('model') or '-'}{weights}", file=sys.stderr)
            printer = asyncio.create_task(_print_frames(client, out, counts, args.quiet))
            try:
                async for chunk in source.chunks():
                    await client.send_audio(chunk.samples)
            except asyncio.CancelledError:
                pass
            bye = await client.end()
            await printer
    finally:
        await source.close()
        if args.out:
            out.close()
    summary = bye.summary
    print(f"done: {summary.get('audio_s', 0):.1f} s of audio, {counts['events']} events, {counts['features']} feature frames, "
          f"dropped {summary.get('dropped') or 'none'}, resumed {client.resumes}x", file=sys.stderr)
    return 0


async def _print_frames(client: Any, out: IO[str], counts: dict[str, int], quiet: bool) -> None:
    async for frame in client:
        if frame.type == "event":
            counts["events"] += 1
            out.write(json.dumps(frame.event, separators=(",", ":")) + "\n")
            out.flush()
        elif frame.type == "features":
            counts["features"] += frame.num_frames
        elif frame.type == "status" and not quiet:
            dropped = sum(frame.dropped.values())
            print(f"\r{frame.audio_s:7.1f} s  lag {frame.lag_s:5.2f} s  {frame.health:8s}  level {frame.level_dbfs:6.1f} dBFS  "
                  f"dropped {dropped}", end="", file=sys.stderr, flush=True)
        elif frame.type == "error":
            print(f"\nserver {frame.error_class} error {frame.code}: {frame.message}" + (f" (hint: {frame.hint})" if frame.hint else ""),
                  file=sys.stderr)
    if not quiet:
        print(file=sys.stderr)
