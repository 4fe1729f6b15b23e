"""Audio feeds: a ``hello`` with ``role: "receive"`` gets a server media file as ``audio`` frames.

This is what lets ``ostinato run --source ws://HOST:PORT/v1/stream?file=NAME`` (a
:class:`~ostinato.stream.source_net.NetSource`) consume from ``ostinato serve``::

    client: hello {role: "receive", resume_from_seq?}      (file/pace from options or the URL query)
    server: ready {sample_rate, encoding: "f32le", channels, info: {file, pace, block_samples, next_seq}}
    server: audio {seq, pcm, start_sample}*  then  end, bye {reason: "end"}, close 1000
            (on server shutdown: bye {reason: "shutdown"} instead; NetSource reconnects and resumes)

Options (``hello.options`` win over the URL query): ``file`` — a name from ``GET /v1/media``
(required); ``pace`` — ``realtime`` (default: a live feed) or ``fast`` (as fast as the receiver
reads; TCP pushes back). Blocks are 100 ms, so ``seq`` maps to a file position and a
reconnecting receiver's ``resume_from_seq`` continues exactly where it stopped. Feeds count
towards the stream limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from ostinato.errors import TooManyStreamsError
from ostinato.stream.errors import ProtocolError
from ostinato.stream.wire import Audio, Bye, End, Hello, Ready, encode_frame, encode_pcm

__all__ = ["FEED_PACES", "feed_options", "run_feed"]

logger = logging.getLogger(__name__)

FEED_PACES = ("realtime", "fast")
_BLOCK_S = 0.1


def feed_options(hello: Hello, query: Mapping[str, str]) -> tuple[str, str]:
    """``(file, pace)`` of a receive ``hello`` (options first, then the URL query).

    Raises:
        ProtocolError: No file named, or an unknown pace.
    """
    file = hello.options.get("file", query.get("file", ""))
    pace = hello.options.get("pace", query.get("pace", "realtime"))
    if not isinstance(file, str) or not file:
        raise ProtocolError("a receive stream needs a server media file: hello.options.file or ?file=NAME in the URL",
                            hint="GET /v1/media lists the files; e.g. ws://HOST:PORT/v1/stream?file=demo.wav")
    if pace not in FEED_PACES:
        raise ProtocolError(f"pace={pace!r}; expected one of {list(FEED_PACES)}")
    return file, str(pace)


async def run_feed(ws: web.WebSocketResponse, service: Any, hello: Hello, path: Path, pace: str) -> None:
    """Send ``path`` to a receiver as audio frames, then ``end`` and ``bye``.

    Raises:
        TooManyStreamsError: At the stream limit.
        ProtocolError: The file cannot be decoded.
    """
    import soundfile as sf

    hub = service.streams
    hub.check_capacity()  # the same limit, metric and shutdown answer as a new stream
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ProtocolError(f"media file {path.name!r} cannot be decoded: {e}") from e
    hub.feeds += 1
    reader = asyncio.create_task(_drain_incoming(ws), name="feed-reader")
    try:
        with f:
            block = max(1, int(f.samplerate * _BLOCK_S))
            seq = min(hello.resume_from_seq or 0, -(-f.frames // block))
            f.seek(seq * block)
            info = {"file": path.name, "pace": pace, "block_samples": block, "next_seq": seq, "frames": f.frames}
            await ws.send_bytes(encode_frame(Ready(stream_id=f"feed-{secrets.token_hex(8)}", sample_rate=int(f.samplerate),
                                              channels=int(f.channels), info=info)))
            sent, done = await _play(ws, service, f, block, seq, pace, reader)
        if not reader.done():
            reason = "end" if done else "shutdown"  # the receiver may resume (resume_from_seq) later
            if done:
                await ws.send_bytes(encode_frame(End()))
            await ws.send_bytes(encode_frame(Bye(reason, {"file": path.name, "audio_frames": sent})))
            await ws.close(code=WSCloseCode.OK, message=reason.encode())
    except (ConnectionError, RuntimeError):
        pass  # the receiver went away; it may reconnect with resume_from_seq
    finally:
        hub.feeds -= 1
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _play(ws: web.WebSocketResponse, service: Any, f: Any, block: int, seq: int, pace: str,
                reader: asyncio.Task[None]) -> tuple[int, bool]:
    """Send blocks until the file ends (``done``), the receiver leaves or the server stops."""
    loop = asyncio.get_running_loop()
    started_s, first, sent = loop.time(), seq, 0
    frames_out = service.metrics.ws_frames.labels("out", "audio")
    while not reader.done() and not ws.closed and service.streams.accepting:
        data = await asyncio.to_thread(f.read, block, dtype="float32", always_2d=True)
        if not len(data):
            return sent, True
        pcm = encode_pcm(np.ascontiguousarray(data), "f32le")
        await ws.send_bytes(encode_frame(Audio(seq=seq, pcm=pcm, start_sample=seq * block)))
        frames_out.inc()
        seq, sent = seq + 1, sent + 1
        if pace == "realtime":
            delay_s = started_s + (seq - first) * block / f.samplerate - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
    return sent, False


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the receiver sends, so its pings are answered; ends on close."""
    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
