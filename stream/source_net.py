"""NetSource: receives audio from an ostinato wire-protocol WebSocket feed (aiohttp client).

Conversation (docs/protocol.md): the client sends ``hello`` with ``role="receive"``; the
server answers ``ready`` (rate, encoding, channels of the audio to come) and then sends
``audio`` frames (``seq`` + PCM, optionally ``start_sample``) until ``end``/``bye``.

Resilience: transient failures (refused/reset connections, timeouts, 5xx handshakes, a
``bye`` for shutdown, an ``error`` frame of class transient) are retried with exponential
backoff and jitter; the ``hello`` of a reconnect carries ``resume_from_seq`` and sequence
gaps are filled with silence and counted, so the timeline stays exact. A circuit breaker
around connecting stops hammering a peer that keeps failing. ``input``/``permanent``
failures (4xx handshakes, protocol violations, permanent ``error`` frames) end the stream.
Backpressure: the source is not "live" (the pipeline gives it a blocking edge); while the
pipeline is busy the socket is not read, and TCP pushes back on the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ostinato.stream.breaker import BreakerConfig, CircuitBreaker
from ostinato.stream.errors import (
    BreakerOpenError,
    ErrorClass,
    ProtocolError,
    SourceClosedError,
    SourceConnectionError,
    SourceUnavailableError,
    classify_error,
)
from ostinato.stream.frames import AudioChunk
from ostinato.stream.metrics import StreamMetrics
from ostinato.stream.retry import RetryPolicy
from ostinato.stream.sources import BlockConverter
from ostinato.stream.wire import Audio, Bye, End, ErrorFrame, Hello, Ready, WireLimits, decode_frame, decode_pcm, encode_frame

__all__ = ["NetSource", "NetSourceConfig"]

logger = logging.getLogger(__name__)

# How long a close waits for the peer's close frame: a peer that never answers must not
# hold up a shutdown.
_CLOSE_TIMEOUT_S = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class NetSourceConfig:
    """Timeouts, retry and breaker settings of a network source.

    Args:
        connect_timeout_s: Limit for the TCP + WebSocket handshake.
        ready_timeout_s: Limit for the server's ``ready`` after our ``hello``.
        idle_timeout_s: No frame for this long counts as a lost connection.
        heartbeat_s: WebSocket ping interval.
        retry: Reconnect attempts and backoff (the count resets after audio flows again).
        breaker: Circuit breaker around connecting.
        limits: Wire decoding limits.
        token: Bearer token sent in the ``Authorization`` header (optional).
    """

    connect_timeout_s: float = 5.0
    ready_timeout_s: float = 5.0
    idle_timeout_s: float = 30.0
    heartbeat_s: float = 10.0
    retry: RetryPolicy = RetryPolicy(max_attempts=8, base_delay_s=0.5, max_delay_s=10.0)
    breaker: BreakerConfig = BreakerConfig(failure_threshold=5, cooldown_s=10.0)
    limits: WireLimits = WireLimits()
    token: str | None = None


@dataclasses.dataclass(slots=True)
class _Cursor:
    """Where the stream stands, carried across reconnects."""

    next_seq: int = 0
    next_sample: int = 0  # at the feed's own rate
    format: tuple[int, str, int] | None = None  # (rate, encoding, channels)
    converter: BlockConverter | None = None
    ended: bool = False


class NetSource:
    """A WebSocket audio feed as a pipeline source.

    Args:
        url: ``ws://`` or ``wss://`` URL of the feed.
        stream_id: Stream id (also sent in ``hello``).
        config: Timeouts, retry, breaker.
        metrics: Counts reconnects and gap samples.
    """

    live = False  # backpressure over TCP instead of dropping

    def __init__(
        self,
        url: str,
        *,
        stream_id: str | None = None,
        config: NetSourceConfig = NetSourceConfig(),
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.url = url
        self.stream_id = stream_id or url
        self.config = config
        self._metrics = metrics
        self.breaker = CircuitBreaker(f"source:{url}", config.breaker, metrics=metrics)
        self._stop = asyncio.Event()
        self._session: Any = None
        self._ws: Any = None
        self._close_task: asyncio.Future[Any] | None = None
        #: Reconnect attempts made.
        self.reconnects = 0
        #: Source-rate samples filled with silence after sequence gaps.
        self.gap_samples = 0

    def stop(self) -> None:
        """End the stream: close the socket; no reconnect."""
        self._stop.set()
        if self._ws is not None and self._close_task is None:
            # Closing wakes the pending receive; the reference keeps the task alive.
            self._close_task = asyncio.ensure_future(self._ws.close())

    async def close(self) -> None:
        """Close the socket and the HTTP session. Idempotent."""
        self._stop.set()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._close_task is not None:
            await self._close_task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        """Connect (and reconnect) and yield 16 kHz mono chunks until the feed ends."""
        cursor = _Cursor()
        failures = 0
        rng = random.Random()
        try:
            while not self._stop.is_set() and not cursor.ended:
                try:
                    async with contextlib.aclosing(self._connection(cursor)) as chunks:
                        async for chunk in chunks:
                            failures = 0
                            yield chunk
                            if self._stop.is_set():
                                break
                except Exception as e:
                    if self._stop.is_set():
                        break
                    failures += 1
                    await self._before_retry(e, failures, rng)
            if cursor.converter is not None:
                for chunk in cursor.converter.finish():
                    yield chunk
        finally:
            await self.close()

    async def _before_retry(self, e: Exception, failures: int, rng: random.Random) -> None:
        error_class = classify_error(e)
        if error_class is not ErrorClass.TRANSIENT:
            raise e
        if not isinstance(e, BreakerOpenError):
            self.breaker.record_failure()
        if failures >= self.config.retry.max_attempts:
            raise SourceConnectionError(f"{self.url}: gave up after {failures} attempts; last error: {e}") from e
        delay_s = max(self.config.retry.delay_s(failures, rng), self.breaker.retry_in_s)
        self.reconnects += 1
        if self._metrics is not None:
            self._metrics.source_reconnects.labels("net").inc()
        logger.warning("%s: %s; reconnecting in %.2f s (attempt %d)", self.url, e, delay_s, failures)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stop.wait()

    async def _connection(self, cursor: _Cursor) -> AsyncGenerator[AudioChunk, None]:
        import aiohttp

        self.breaker.check()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else None
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                self._ws = await self._session.ws_connect(
                    self.url, heartbeat=self.config.heartbeat_s, max_msg_size=self.config.limits.max_message_bytes,
                    headers=headers, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_TIMEOUT_S),
                )
        except aiohttp.WSServerHandshakeError as e:
            if e.status >= 500:
                raise SourceConnectionError(f"{self.url}: handshake failed with HTTP {e.status}") from e
            raise SourceUnavailableError(
                f"{self.url}: handshake refused with HTTP {e.status} {e.message}",
                hint="check the URL path and the token (--token-file)" if e.status in (401, 403, 404) else None,
            ) from e
        ws = self._ws
        try:
            hello = Hello(sample_rate=16000, stream_id=self.stream_id, role="receive",
                          resume_from_seq=cursor.next_seq or None)
            await ws.send_bytes(encode_frame(hello, self.config.limits))
            ready = await self._receive(ws, self.config.ready_timeout_s)
            if not isinstance(ready, Ready):
                raise ProtocolError(f"{self.url}: expected a ready frame after hello, got {ready.type!r}")
            self._accept_format(cursor, ready)
            self.breaker.record_success()
            while True:
                frame = await self._receive(ws, self.config.idle_timeout_s)
                if isinstance(frame, Audio):
                    for chunk in self._on_audio(cursor, frame):
                        yield chunk
                elif isinstance(frame, End | Bye):
                    if isinstance(frame, Bye) and frame.reason not in ("end", ""):
                        raise SourceConnectionError(f"{self.url}: server said bye ({frame.reason})")
                    cursor.ended = True
                    return
        finally:
            self._ws = None
            await ws.close()

    async def _receive(self, ws: Any, timeout_s: float) -> Any:
        import aiohttp

        msg = await ws.receive(timeout=timeout_s)
        if msg.type == aiohttp.WSMsgType.BINARY:
            frame = decode_frame(msg.data, self.config.limits)
            if isinstance(frame, ErrorFrame):
                raise _remote_error(self.url, frame)
            return frame
        if msg.type == aiohttp.WSMsgType.TEXT:
            raise ProtocolError(f"{self.url}: got a text message; the wire protocol uses binary msgpack frames")
        raise SourceConnectionError(f"{self.url}: connection closed ({msg.type.name}, code {ws.close_code})")

    def _accept_format(self, cursor: _Cursor, ready: Ready) -> None:
        fmt = (ready.sample_rate, ready.encoding, ready.channels)
        if cursor.format is None:
            cursor.format = fmt
            cursor.converter = BlockConverter(self.stream_id, ready.sample_rate, ready.channels)
        elif fmt != cursor.format:
            raise ProtocolError(f"{self.url}: audio format changed on reconnect from {cursor.format} to {fmt}")

    def _on_audio(self, cursor: _Cursor, frame: Audio) -> list[AudioChunk]:
        rate, encoding, channels = cursor.format or (16000, "f32le", 1)
        converter = cursor.converter
        if converter is None:  # pragma: no cover - set by _accept_format before any audio
            raise ProtocolError("audio before ready")
        samples = decode_pcm(frame.pcm, encoding, channels)
        n = int(samples.shape[0])
        if frame.seq < cursor.next_seq:
            return []  # a duplicate replayed after a resume
        gap = 0
        if frame.start_sample is not None:
            gap = frame.start_sample - cursor.next_sample
            if gap < 0:
                raise ProtocolError(f"audio.start_sample={frame.start_sample} goes back (expected {cursor.next_sample})")
        elif frame.seq > cursor.next_seq:
            gap = (frame.seq - cursor.next_seq) * n  # best estimate: lost frames were this size
        out: list[AudioChunk] = []
        if gap:
            self.gap_samples += gap
            if self._metrics is not None:
                self._metrics.source_gap_samples.labels("net").inc(gap)
            logger.warning("%s: %d sample(s) lost before seq %d; filled with silence", self.url, gap, frame.seq)
            out += converter.gap(gap)
        cursor.next_seq = frame.seq + 1
        cursor.next_sample += gap + n
        out += converter.convert(samples if channels > 1 else samples[:, 0])
        return out


def _remote_error(url: str, frame: ErrorFrame) -> Exception:
    message = f"{url}: server error {frame.code}: {frame.message}"
    if frame.error_class == "transient":
        return SourceConnectionError(message, hint=frame.hint or None)
    error = SourceClosedError(message, hint=frame.hint or None)
    error.error_class = ErrorClass(frame.error_class)
    return error
