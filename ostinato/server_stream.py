"""``GET /v1/stream``: the WebSocket endpoint speaking the wire protocol (``docs/protocol.md``).

One connection carries one stream. The conversation::

    client: hello            server: ready  (stream_id, resume_token, next_seq, limits)
    client: audio*, flush    server: event*, features*, status*   (flush -> status)
    client: end              server: status, bye, close

Every bad message is answered with an ``error`` frame (code, class, message, hint) and the
stream goes on; it is closed only when it cannot continue: no ``hello`` in time, a message
beyond the hard size limit (the rest of it cannot be skipped), a silent client (idle), a
stream limit or model problem at ``hello``, or a client that sends nothing but invalid
messages. No stack trace ever reaches the client (errors are logged with the stream id).
A connection that drops without ``end`` leaves its stream running for the resume grace
period; ``hello`` with the stream id and ``options.resume_token`` re-attaches it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ostinato.errors import ServiceError, TooManyStreamsError
from ostinato.limits import TokenBucket
from ostinato.server_feed import feed_options, run_feed
from ostinato.outbox import Replay
from ostinato.server import SERVICE_KEY, Service, problem
from ostinato.stream.errors import ChannelClosedError, InvalidAudioError, ProtocolError, StreamError
from ostinato.stream.wire import (
    Audio,
    Bye,
    End,
    ErrorFrame,
    Flush,
    Frame,
    Hello,
    Ready,
    WireLimits,
    decode_frame,
    encode_frame,
)
from ostinato.stream_options import SessionOptions
from ostinato.stream_session import StreamSession
from ostinato.streams import StreamHub

__all__ = ["setup"]

logger = logging.getLogger(__name__)

#: Consecutive invalid messages after which a connection is closed (nothing valid arrives).
MAX_CONSECUTIVE_ERRORS = 50
_RATE_NOTICE_INTERVAL_S = 5.0


def setup(app: web.Application) -> None:
    """Create the stream hub and add ``/v1/stream``."""
    service = app[SERVICE_KEY]
    service.streams = StreamHub(service)
    app.router.add_get("/v1/stream", stream_handler)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket and run one stream connection."""
    service = request.app[SERVICE_KEY]
    if service.shutting_down:
        return problem(503, "shutting_down", "the service is shutting down", error_class="transient",
                       hint="reconnect to another instance, or later")
    ws = _GuardedWebSocket(service.limits.hard_message_bytes, max_msg_size=service.limits.hard_message_bytes,
                           autoping=True, heartbeat=service.limits.heartbeat_s, compress=False)
    await ws.prepare(request)
    service.metrics.ws_connections.inc()
    try:
        await _Connection(ws, service, request.query).run()
    finally:
        service.metrics.ws_connections.dec()
        if not ws.closed:
            await ws.close()
    return ws


class _GuardedWebSocket(web.WebSocketResponse):
    """A WebSocket that explains a 1009 close with an ``error`` frame first.

    aiohttp rejects a message above ``max_msg_size`` from its header, before buffering it, and
    its reader cannot skip the rest of the payload, so the connection has to close (1009). It
    closes inside ``receive()``; this hook sends the ``message_too_large`` error frame on the
    way out, so the peer learns why and what to do.
    """

    def __init__(self, hard_limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hard_limit = hard_limit
        self.too_large = False

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed and not self.too_large:
            self.too_large = True
            frame = ErrorFrame("message_too_large", f"message is larger than the hard limit of {self.hard_limit} bytes; "
                               "the connection is closed because the rest of it cannot be skipped", "input",
                               f"split audio into smaller audio frames (at most {self.hard_limit} bytes per message; "
                               "ready.info.limits.max_message_bytes is the size accepted without error)", True)
            try:
                await self.send_bytes(encode_frame(frame))
            except (ConnectionError, RuntimeError):
                pass
        return await super().close(code=code, message=message, drain=drain)


class _Connection:
    def __init__(self, ws: _GuardedWebSocket, service: Service, query: Mapping[str, str]) -> None:
        self.ws = ws
        self.query = query
        self.service = service
        self.hub: StreamHub = service.streams
        self.limits = service.limits
        self.metrics = service.metrics
        self.wire_limits = WireLimits(max_message_bytes=self.limits.max_message_bytes)
        self.bucket = TokenBucket(self.limits.max_messages_per_s, self.limits.message_burst)
        self.errors_in_row = 0
        self.rate_noted_s = -math.inf

    # -- sending -------------------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        self.metrics.ws_frames.labels("out", frame.type).inc()
        await self.ws.send_bytes(encode_frame(frame))

    async def send_error(self, code: str, e: BaseException | str, *, fatal: bool = False,
                         error_class: str | None = None, hint: str | None = None) -> None:
        """Send an ``error`` frame (ignoring a connection that is already gone)."""
        if isinstance(e, BaseException):
            h = getattr(e, "hint", "") or ""
            message = str(e).removesuffix(f" (hint: {h})") if h else str(e)
            klass = getattr(e, "error_class", "input")
            hint = hint if hint is not None else h
        else:
            message, klass = e, "input"
        self.metrics.rejected.labels(code).inc()
        frame = ErrorFrame(code, message, str(error_class or getattr(klass, "value", klass)), hint or "", fatal)  # type: ignore[arg-type]
        try:
            await self.send(frame)
        except (ConnectionError, RuntimeError):
            pass

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code=code, message=reason.encode()[:120])
        except (ConnectionError, RuntimeError):
            pass

    # -- receiving -----------------------------------------------------------------------------

    async def receive(self, timeout_s: float | None) -> Frame | None | str:
        """Next valid frame; ``None`` when the peer is gone; ``"skip"`` after a handled bad message."""
        try:
            async with asyncio.timeout(timeout_s):
                msg = await self.ws.receive()
        except TimeoutError:
            return "timeout"
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if msg.type is WSMsgType.ERROR:
            # Beyond the hard limit the rest of the message cannot be skipped: aiohttp has
            # already sent the error frame (_GuardedWebSocket) and closed with 1009.
            if self.ws.too_large:
                self.metrics.rejected.labels("message_too_large").inc()
                self.metrics.ws_frames.labels("out", "error").inc()
            logger.info("connection closed: %s", msg.data)
            return None
        await self.pace()
        if msg.type is WSMsgType.TEXT:
            return await self.bad("protocol_error", ProtocolError("text WebSocket messages are not part of the protocol; send binary msgpack frames"))
        data = msg.data
        if len(data) > self.limits.max_message_bytes:
            return await self.bad("message_too_large", ProtocolError(
                f"message is {len(data)} bytes; the limit is {self.limits.max_message_bytes}",
                hint="send smaller audio blocks (the limit is in ready.info.limits)"))
        try:
            frame = decode_frame(data, self.wire_limits)
        except ProtocolError as e:
            return await self.bad("protocol_error", e)
        self.metrics.ws_frames.labels("in", frame.type).inc()
        return frame

    async def pace(self) -> None:
        """Per-connection message rate: over it, stop reading (TCP pushes back) and say so once."""
        wait_s = self.bucket.take()
        if wait_s <= 0:
            return
        now_s = asyncio.get_running_loop().time()
        if now_s - self.rate_noted_s >= _RATE_NOTICE_INTERVAL_S:  # tell the peer, but not on every message
            self.rate_noted_s = now_s
            await self.send_error("rate_limited", f"more than {self.limits.max_messages_per_s:g} messages/s; reading is paused",
                                  error_class="transient", hint="send fewer, larger audio blocks")
        while wait_s > 0:
            await asyncio.sleep(wait_s)
            wait_s = self.bucket.take()

    async def bad(self, code: str, e: StreamError) -> str:
        """Answer an invalid message; close only after too many in a row."""
        self.errors_in_row += 1
        fatal = self.errors_in_row >= MAX_CONSECUTIVE_ERRORS
        await self.send_error(code, e, fatal=fatal)
        if fatal:
            await self.close(WSCloseCode.POLICY_VIOLATION, "too many invalid messages")
            raise _Closed
        return "skip"

    # -- conversation --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            session = await self.handshake()
        except _Closed:
            return
        if session is None:
            return
        session.attached = True
        writer = asyncio.create_task(self.write(session), name=f"writer-{session.stream_id}")
        try:
            await self.read(session)
        except _Closed:
            pass
        finally:
            await self.finish(session, writer)

    async def handshake(self) -> StreamSession | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.hello_timeout_s
        while True:
            item = await self.receive(max(0.0, deadline - loop.time()))
            if item is None:
                return None
            if item == "timeout":
                await self.send_error("hello_timeout", f"no hello within {self.limits.hello_timeout_s:g} s", fatal=True,
                                      hint="send a hello frame first (docs/protocol.md)")
                await self.close(WSCloseCode.POLICY_VIOLATION, "no hello")
                return None
            if isinstance(item, str):
                continue
            if not isinstance(item, Hello):
                await self.bad("hello_required", ProtocolError(f"{item.type} frame before hello", hint="send hello first"))
                continue
            session = await self.open(item)
            if session is not None:
                self.errors_in_row = 0
                return session

    async def open(self, hello: Hello) -> StreamSession | None:
        """Start or resume the stream ``hello`` asks for; ``None`` after a refusal."""
        if hello.role == "receive":
            await self.feed(hello)
            return None
        model = hello.options.get("model")
        token = hello.options.get("resume_token")
        try:
            if model is not None and not isinstance(model, str):
                raise ProtocolError(f"hello.options.model={model!r}; expected a model name")
            if token is not None and not isinstance(token, str):
                raise ProtocolError("hello.options.resume_token must be a string")
            if hello.stream_id and (token is not None or hello.resume_from_seq is not None):
                session = self.hub.resume(hello, token or "")
                resumed = True
            else:
                options = SessionOptions.from_hello(hello, self.hub.streaming(None).overflow, self.limits.status_interval_s)
                session = self.hub.open(hello, options, model)
                resumed = False
        except TooManyStreamsError as e:
            await self.send_error(e.code, e, fatal=True)
            await self.close(WSCloseCode.TRY_AGAIN_LATER, "too many streams")
            raise _Closed from e
        except (ServiceError, StreamError) as e:
            code = getattr(e, "code", "protocol_error" if isinstance(e, ProtocolError) else "refused")
            await self.bad(code, e)
            return None
        replay = session.outbox.replay_after(hello.last_output_seq) if resumed and hello.last_output_seq is not None else None
        await self.send(self.ready(session, resumed, replay))
        if replay is not None:
            self.note_replay(session, replay)
        return session

    async def feed(self, hello: Hello) -> None:
        """A receiver: send it a server media file (ostinato.server_feed); ends the connection."""
        try:
            file, pace = feed_options(hello, self.query)
            path = self.hub.media(file)
            await run_feed(self.ws, self.service, hello, path, pace)
        except TooManyStreamsError as e:
            await self.send_error(e.code, e, fatal=True)
            await self.close(WSCloseCode.TRY_AGAIN_LATER, "too many streams")
        except ProtocolError as e:
            await self.bad("protocol_error", e)
            return  # the peer may send another hello
        raise _Closed

    def note_replay(self, session: StreamSession, replay: Replay) -> None:
        """Count a resume's replay; tell the client about output it can no longer get."""
        self.metrics.replayed.labels("replayed").inc(replay.replayed)
        if not replay.lost:
            return
        self.metrics.replayed.labels("lost").inc(replay.lost)
        session.dropped["replay_lost"] += replay.lost
        last = (replay.lost_from_seq or 0) + replay.lost - 1
        session.outbox.unget(ErrorFrame(
            "output_gap", f"output frames seq {replay.lost_from_seq}..{last} are no longer held (replay buffer of "
            f"{self.limits.replay_frames} frames / {self.limits.replay_bytes} bytes); they are lost", "transient",
            "resume sooner, or ask for fewer/smaller outputs (features_hz, features_dtype f16)", False))

    def ready(self, session: StreamSession, resumed: bool, replay: Replay | None = None) -> Ready:
        engine = session.engine
        info: dict[str, Any] = {
            "resume_token": session.resume_token,
            "resumed": resumed,
            "next_seq": session.next_seq,
            "through_seq": session.acks.through(session.options.match),
            "next_output_seq": session.outbox.next_seq,
            "resume_grace_s": self.limits.resume_grace_s,
            "model": session.model_name,
            "outputs": sorted(session.options.outputs),
            "overflow": session.options.overflow,
            "match": session.options.match,
            "match_features": session.options.match_features,
            "limits": {"max_message_bytes": self.limits.max_message_bytes,
                       "max_audio_s_per_message": self.limits.max_audio_s_per_message,
                       "max_messages_per_s": self.limits.max_messages_per_s,
                       "idle_timeout_s": self.limits.idle_timeout_s},
        }
        if engine is not None:
            w = engine.windower_config
            info["window"] = {"hop_samples": w.hop_samples, "left_context_samples": w.left_context_samples,
                              "right_context_samples": w.right_context_samples, "window_samples": w.window_samples}
            info["output"] = engine.output
            info["random_weights"] = bool(engine.entry.model.manifest.random_init)
        if session.media_path is not None:
            info["file"] = session.media_path.name
        if replay is not None:
            info["replay"] = replay.info()
        return Ready(stream_id=session.stream_id, frame_stride_samples=320 * session.options.features_every, info=info)

    async def read(self, session: StreamSession) -> None:
        idle_s = None if session.media_path is not None else self.limits.idle_timeout_s
        while not session.finished.is_set():
            item = await self.receive(idle_s)
            if item is None:
                return
            if item == "timeout":
                self.metrics.rejected.labels("idle").inc()
                await session.abort("idle", f"no message for {idle_s:g} s")
                return
            if isinstance(item, str):
                continue
            if await self.dispatch(session, item):
                return

    async def dispatch(self, session: StreamSession, frame: Frame) -> bool:
        """Handle one frame; True when the conversation is over (``end`` processed)."""
        if isinstance(frame, Audio):
            if session.media_path is not None:
                await self.bad("audio_ignored", ProtocolError("this stream plays a server-side file; audio frames are ignored"))
                return False
            try:
                await session.feed(frame.seq, frame.pcm, frame.start_sample)
            except InvalidAudioError as e:
                session.dropped["invalid_audio"] += 1
                await self.bad("bad_audio", e)
                return False
            except ChannelClosedError:
                await self.bad("stream_ended", ProtocolError("audio after end", hint="open a new stream"))
                return False
        elif isinstance(frame, Flush):
            await session.barrier()
        elif isinstance(frame, End):
            session.end()
            await session.finished.wait()
            return True
        elif isinstance(frame, Hello):
            changed = frame.sample_rate != session.hello.sample_rate and session.media_path is None
            await self.bad("sample_rate_changed" if changed else "duplicate_hello", ProtocolError(
                f"hello.sample_rate={frame.sample_rate} on a stream opened at {session.hello.sample_rate} Hz; the second hello is ignored"
                if changed else "a second hello on an open stream is ignored",
                hint="a stream keeps its format; open a new connection for a different one"))
            return False
        else:
            await self.bad("unexpected_frame", ProtocolError(f"{frame.type} frames are sent by the server, not to it"))
            return False
        self.errors_in_row = 0
        return False

    async def write(self, session: StreamSession) -> None:
        while True:
            frame = await session.outbox.get()
            try:
                await self.send(frame)
            except asyncio.CancelledError:
                session.outbox.unget(frame)
                raise
            except (ConnectionError, RuntimeError):
                session.outbox.unget(frame)
                return
            if isinstance(frame, Bye):
                await self.close(WSCloseCode.OK, frame.reason)
                return
            if isinstance(frame, ErrorFrame) and frame.fatal and session.finished.is_set():
                continue

    async def finish(self, session: StreamSession, writer: asyncio.Task[None]) -> None:
        if session.finished.is_set() and not self.ws.closed:
            # Let the writer deliver the final frames (bye closes the socket).
            try:
                async with asyncio.timeout(5.0):
                    await asyncio.shield(writer)
            except (TimeoutError, Exception):
                pass
        if not writer.done():
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
        session.attached = False
        if not session.finished.is_set():
            self.hub.detach(session)


class _Closed(Exception):
    """The connection was closed by us after a fatal error."""
