"""Python client of the ostinato service's streaming API (``/v1/stream``).

``StreamClient`` (asyncio) connects with a timeout, retries transient failures with
exponential backoff and jitter, fails fast behind a circuit breaker while the server keeps
failing, and — when the connection drops mid-stream — reconnects and resumes the same stream
id within the server's grace period, resending the audio the server had not received.
Errors are typed (:class:`~ostinato.errors.ServerError` etc.) and carry the server's class
(``input`` | ``transient`` | ``permanent``) and recovery hint::

    async with StreamClient("ws://127.0.0.1:8765/v1/stream", sample_rate=16000) as client:
        await client.send_audio(samples)          # float32 mono, any block size
        bye = await client.end()
        for frame in client.received:              # events, status, features, errors
            ...

Iterate ``async for frame in client`` to consume frames live. :class:`SyncStreamClient`
wraps the same API for code without an event loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from ostinato.client_buffer import ResendBuffer
from ostinato.errors import ClientError, ConnectTimeoutError, ServerClosedError, ServerError, error_from_wire
from ostinato.stream.breaker import BreakerConfig, CircuitBreaker
from ostinato.stream.errors import ErrorClass, ProtocolError, classify_error
from ostinato.stream.retry import RetryPolicy, retry_call
from ostinato.stream.wire import (
    Audio,
    Bye,
    End,
    ErrorFrame,
    Event,
    Flush,
    Frame,
    Hello,
    Ready,
    Status,
    decode_frame,
    encode_frame,
    encode_pcm,
)

__all__ = ["ClientConfig", "StreamClient", "SyncStreamClient"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ClientConfig:
    """Connection behaviour of :class:`StreamClient` (defaults from the seed configuration).

    Args:
        timeout_ms: Connect timeout, and the time the server has to answer ``hello``.
        max_retries: Retries after the first failed attempt (transient errors only).
        backoff_ms: Delay before the first retry; doubles per retry, with jitter.
        max_backoff_ms: Cap on any retry delay.
        jitter: Fraction of each delay that is randomized (0..1).
        token: Bearer token (``None``: no ``Authorization`` header).
        resend_buffer_s: Audio kept to resend after a resume, at most (frames the server
            acknowledged with ``through_seq`` are dropped sooner).
        in_use_wait_s: How long a resume keeps retrying ``stream_in_use`` (the server still
            holds the previous connection; it drops a dead one within 1.5 heartbeats, 15 s).
        block_ms: Audio per ``audio`` message.
        breaker: Circuit breaker around connecting (each failed connect, after all its retries,
            counts as one failure).
        max_received: Frames kept for :attr:`StreamClient.received` / iteration; beyond it the
            oldest status/features frames are dropped (events and errors are kept).
    """

    timeout_ms: int = 5000
    max_retries: int = 3
    backoff_ms: int = 1000
    max_backoff_ms: int = 30_000
    jitter: float = 0.5
    token: str | None = None
    resend_buffer_s: float = 10.0
    in_use_wait_s: float = 20.0
    block_ms: int = 100
    breaker: BreakerConfig = BreakerConfig(failure_threshold=3, min_calls=3, window_calls=10, cooldown_s=10.0)
    max_received: int = 4096

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0 or self.max_retries < 0 or self.backoff_ms < 0 or self.max_backoff_ms < self.backoff_ms:
            raise ValueError(f"timeout_ms={self.timeout_ms}, max_retries={self.max_retries}, backoff_ms={self.backoff_ms}, "
                             f"max_backoff_ms={self.max_backoff_ms}; expected timeout > 0, retries >= 0, 0 <= backoff <= max")
        if not 0 <= self.jitter <= 1 or self.resend_buffer_s < 0 or not 1 <= self.block_ms <= 2000:
            raise ValueError("expected 0 <= jitter <= 1, resend_buffer_s >= 0, 1 <= block_ms <= 2000")

    @property
    def retry_policy(self) -> RetryPolicy:
        """The equivalent :class:`~ostinato.stream.retry.RetryPolicy`."""
        return RetryPolicy(max_attempts=self.max_retries + 1, base_delay_s=self.backoff_ms / 1000,
                           max_delay_s=self.max_backoff_ms / 1000, multiplier=2.0, jitter=self.jitter)


class StreamClient:
    """One stream to an ostinato server.

    Args:
        url: ``ws://host:port/v1/stream`` (or ``wss://``).
        sample_rate: Rate of the audio you send (the server resamples).
        encoding: ``f32le`` or ``s16le`` on the wire.
        channels: Interleaved channels of the audio you send.
        outputs: What the server should send: ``events``, ``features``, ``status``.
        options: ``hello.options`` (``model``, ``overflow``, ``match_features``, ``features_hz``…).
        config: Timeouts, retries, breaker, token.
        rng: Random source of the jitter.
    """

    def __init__(
        self, url: str, *, sample_rate: int = 16000, encoding: str = "f32le", channels: int = 1,
        outputs: tuple[str, ...] = ("events", "status"), options: dict[str, Any] | None = None,
        config: ClientConfig = ClientConfig(), rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.config = config
        self._hello = Hello(sample_rate=sample_rate, encoding=encoding, channels=channels,  # type: ignore[arg-type]
                            outputs=tuple(outputs), options=dict(options or {}))
        self.breaker = CircuitBreaker(f"client:{url}", config.breaker)
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._frames: collections.deque[Frame] = collections.deque()
        self._arrived = asyncio.Event()
        self._lost = asyncio.Event()
        self._fatal: ClientError | None = None
        self.resend = ResendBuffer(config.resend_buffer_s * sample_rate, encoding, channels)
        #: Highest output ``seq`` received (event/features/status); sent as ``last_output_seq`` on resume.
        self.last_output_seq = -1
        #: Output frames missed (seq jumps), and resume retries while the old connection was held.
        self.output_gaps = 0
        self.in_use_retries = 0
        self.retries = 0
        #: The latest ``status`` frame.
        self.last_status: Status | None = None
        self._statuses = 0
        self._server_acks = True
        self._pending = np.zeros((0, channels), np.float32)
        #: The ``ready`` frame of the current connection.
        self.ready: Ready | None = None
        #: Stream id given by the server (kept across resumes).
        self.stream_id = ""
        self._resume_token = ""
        self._next_seq = 0
        self._samples_sent = 0
        #: The ``bye`` frame, once the server ended the stream.
        self.bye: Bye | None = None
        #: Reconnects that resumed the stream.
        self.resumes = 0

    # -- connection ------------------------------------------------------------------------------

    async def __aenter__(self) -> StreamClient:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> Ready:
        """Open the stream, retrying transient failures (with backoff and jitter).

        Returns:
            The server's ``ready`` frame.

        Raises:
            ConnectTimeoutError: No connection or ``ready`` within ``timeout_ms`` (after retries).
            BreakerOpenError: Too many recent failures; the breaker fails fast until its cool-down ends.
            ServerError: The server refused the stream (its class and hint are attached).
        """
        return await self._with_retries(lambda: self._open(resume=False), "connect")

    async def _with_retries(self, fn: Any, operation: str) -> Ready:
        # The breaker judges whole operations (all retries), so one unlucky connect does not
        # open it; while it is open, connecting fails at once instead of retrying again.
        self.breaker.check()
        try:
            ready: Ready = await retry_call(fn, self.config.retry_policy, operation=operation, rng=self._rng,
                                            on_retry=self._count_retry)
        except Exception as e:
            if classify_error(e) is ErrorClass.TRANSIENT:
                self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return ready

    def _count_retry(self, attempt: int, error: BaseException, delay_s: float) -> None:
        self.retries += 1

    async def _resume(self) -> Ready:
        """Resume; while the server still holds our previous connection (``stream_in_use``,
        transient) keep retrying for up to ``in_use_wait_s`` without counting it as a failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.in_use_wait_s
        delay_s = max(0.05, self.config.backoff_ms / 1000)
        while True:
            try:
                return await self._open(resume=True)
            except ServerError as e:
                if e.code != "stream_in_use" or loop.time() + delay_s > deadline:
                    raise
            self.in_use_retries += 1
            await asyncio.sleep(delay_s * (1 - self.config.jitter * (self._rng or random).random()))
            delay_s = min(2 * delay_s, 2.0, max(0.05, self.config.max_backoff_ms / 1000))

    async def _open(self, *, resume: bool) -> Ready:
        await self._drop_connection()
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}
            self._session = aiohttp.ClientSession(headers=headers)
        timeout_s = self.config.timeout_ms / 1000
        hello = self._hello
        if resume:
            hello = dataclasses.replace(hello, stream_id=self.stream_id, resume_from_seq=self._next_seq,
                                        options={**hello.options, "resume_token": self._resume_token},
                                        last_output_seq=self.last_output_seq if self.last_output_seq >= 0 else None)
        try:
            async with asyncio.timeout(timeout_s):
                ws = await self._session.ws_connect(self.url, autoping=True, max_msg_size=0)
                await ws.send_bytes(encode_frame(hello))
                ready = await self._await_ready(ws)
        except TimeoutError as e:
            raise ConnectTimeoutError(f"no ready from {self.url} within {self.config.timeout_ms} ms") from e
        except aiohttp.WSServerHandshakeError as e:
            klass = ErrorClass.TRANSIENT if e.status >= 500 or e.status == 429 else ErrorClass.PERMANENT
            hint = "check the token (--token-file on the server)" if e.status in (401, 403) else ""
            raise ClientError(f"server refused the WebSocket: HTTP {e.status} {e.message}", code=f"http_{e.status}",
                              error_class=klass, hint=hint or None) from e
        except aiohttp.ClientError as e:
            raise ServerClosedError(f"cannot connect to {self.url}: {e}", code="connect_failed") from e
        self._ws = ws
        self.ready = ready
        self.stream_id = ready.stream_id
        self._resume_token = str(ready.info.get("resume_token", ""))
        self.resend.ack(_int_or_none(ready.info.get("through_seq")))
        self._server_acks = "through_seq" in ready.info  # servers before the acks: any status answers flush
        self._lost.clear()
        self._reader = asyncio.create_task(self._read(ws), name=f"client-reader-{self.stream_id}")
        if resume:
            self.resumes += 1
            await self._resend_from(int(ready.info.get("next_seq", self._next_seq)))
        return ready

    async def _await_ready(self, ws: aiohttp.ClientWebSocketResponse) -> Ready:
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.BINARY:
                raise ServerClosedError(f"connection closed before ready ({msg.type.name})", code="closed_before_ready")
            frame = decode_frame(msg.data)
            if isinstance(frame, Ready):
                return frame
            if isinstance(frame, ErrorFrame):
                await ws.close()
                raise error_from_wire(frame.code, frame.message, frame.error_class, frame.hint)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                continue
            try:
                frame = decode_frame(msg.data)
            except ProtocolError as e:
                logger.warning("undecodable frame from server: %s", e)
                continue
            if isinstance(frame, ErrorFrame) and frame.fatal:
                self._fatal = error_from_wire(frame.code, frame.message, frame.error_class, frame.hint)
            if isinstance(frame, Bye):
                self.bye = frame
            if self._is_duplicate(frame):
                continue
            self._keep(frame)
        if self.bye is None and self._fatal is None:
            self._lost.set()
        self._arrived.set()

    def _is_duplicate(self, frame: Frame) -> bool:
        """Track output ``seq`` (gaps counted; a replayed frame already seen is skipped) and acks."""
        seq = getattr(frame, "seq", None) if not isinstance(frame, Audio) else None
        if isinstance(frame, Status):
            self.resend.ack(frame.through_seq)
            self.last_status = frame
            self._statuses += 1
        if seq is None:
            return False
        if seq <= self.last_output_seq:
            return True
        self.output_gaps += seq - self.last_output_seq - 1
        self.last_output_seq = seq
        return False

    def _keep(self, frame: Frame) -> None:
        self._frames.append(frame)
        if len(self._frames) > self.config.max_received:
            for i, f in enumerate(self._frames):
                if f.type in ("status", "features"):
                    del self._frames[i]
                    break
        self._arrived.set()

    async def _drop_connection(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _ensure_connected(self) -> aiohttp.ClientWebSocketResponse:
        if self._fatal is not None:
            raise self._fatal
        if self.bye is not None:
            raise ClientError(f"the server ended the stream ({self.bye.reason})", code="stream_ended",
                              error_class=ErrorClass.PERMANENT, hint="open a new StreamClient")
        if self._ws is None or self._ws.closed or self._lost.is_set():
            if not self.stream_id:
                await self.connect()
            else:
                logger.warning("connection to %s lost; resuming stream %s", self.url, self.stream_id)
                await self._with_retries(self._resume, "resume")
        assert self._ws is not None
        return self._ws

    # -- sending ---------------------------------------------------------------------------------

    async def send_audio(self, samples: npt.ArrayLike) -> None:
        """Send audio (float in [-1, 1], ``[n]`` or ``[n, channels]``), in ``block_ms`` messages.

        Reconnects and resumes transparently when the connection dropped.

        Raises:
            ServerError: A fatal server error (class and hint attached).
            ClientError: Reconnecting failed after the retries.
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1, self._hello.channels)
        self._pending = np.concatenate([self._pending, x]) if self._pending.size else x
        block = max(1, self._hello.sample_rate * self.config.block_ms // 1000)
        while self._pending.shape[0] >= block:
            await self._send_block(self._pending[:block])
            self._pending = self._pending[block:]

    async def _send_block(self, block: npt.NDArray[np.float32]) -> None:
        frame = Audio(seq=self._next_seq, pcm=encode_pcm(block, self._hello.encoding), start_sample=self._samples_sent)
        self._next_seq += 1
        self._samples_sent += block.shape[0]
        self.resend.add(frame)
        await self._send(frame)

    async def _send(self, frame: Frame) -> None:
        ws = await self._ensure_connected()
        try:
            await ws.send_bytes(encode_frame(frame))
            return
        except (ConnectionError, aiohttp.ClientError):
            self._lost.set()
        # Resuming resends buffered audio (this frame included, if it is audio).
        ws = await self._ensure_connected()
        if not isinstance(frame, Audio):
            await ws.send_bytes(encode_frame(frame))

    async def _resend_from(self, next_seq: int) -> None:
        missing = self.resend.since(next_seq)
        if next_seq < self._next_seq and (not missing or missing[0].seq > next_seq):
            logger.warning("resume: server expects seq %d but only seq >= %d is buffered; the gap is lost",
                           next_seq, missing[0].seq if missing else self._next_seq)
        assert self._ws is not None
        for frame in missing:
            await self._ws.send_bytes(encode_frame(frame))

    async def flush(self) -> Status:
        """Send pending audio and ``flush``; wait for the status that answers it: the first whose
        ``through_seq`` covers the last audio sent (every earlier feature/event has arrived then)."""
        await self._send_pending()
        last, count = self._next_seq - 1, self._statuses
        await self._send(Flush())
        while True:
            status = self.last_status
            acked = status is not None and (status.through_seq if status.through_seq is not None else -1) >= last
            if self._statuses > count and status is not None and (acked or not self._server_acks):
                return status
            if self._fatal is not None:
                raise self._fatal
            if self.bye is not None:
                raise ClientError("stream ended while waiting for flush", code="stream_ended", error_class=ErrorClass.PERMANENT)
            if self._lost.is_set():
                await self._ensure_connected()  # resumed: ask again
                await self._send(Flush())
            self._arrived.clear()
            await self._arrived.wait()

    async def end(self, timeout_s: float = 60.0) -> Bye:
        """Send pending audio and ``end``; wait for ``bye`` (all output has arrived then).

        Raises:
            ServerError: The server failed the stream.
            TimeoutError: No ``bye`` within ``timeout_s``.
        """
        await self._send_pending()
        await self._send(End())
        async with asyncio.timeout(timeout_s):
            while self.bye is None:
                if self._fatal is not None:
                    raise self._fatal
                if self._lost.is_set():
                    await self._ensure_connected()  # resumed: the server saw no end yet
                    await self._send(End())
                self._arrived.clear()
                await self._arrived.wait()
        return self.bye

    async def _send_pending(self) -> None:
        if self._pending.shape[0]:
            block, self._pending = self._pending, np.zeros((0, self._hello.channels), np.float32)
            await self._send_block(block)

    # -- receiving -------------------------------------------------------------------------------

    @property
    def received(self) -> list[Frame]:
        """Frames received and not yet consumed by iteration (events, features, status, errors, bye)."""
        return list(self._frames)

    def events(self) -> list[dict[str, Any]]:
        """The ``event`` payloads received so far (``match``/``novelty`` objects of docs/events.md)."""
        return [f.event for f in self._frames if isinstance(f, Event)]

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Frame]:
        while True:
            while self._frames:
                frame = self._frames.popleft()
                yield frame
                if isinstance(frame, Bye):
                    return
            if self._fatal is not None:
                raise self._fatal
            if self._lost.is_set():
                await self._ensure_connected()
                continue
            self._arrived.clear()
            await self._arrived.wait()

    async def close(self) -> None:
        """Close the connection (without ending the stream: it can be resumed until the grace ends)."""
        await self._drop_connection()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def lose_connection(self) -> None:
        """Drop the transport abruptly, as a network failure would (for tests and drills)."""
        if self._ws is not None:
            transport = self._ws._response.connection.transport if self._ws._response.connection else None  # noqa: SLF001
            if transport is not None:
                transport.abort()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


from ostinato.client_sync import SyncStreamClient  # noqa: E402  (re-exported; it wraps StreamClient)
