"""The service's live streams: the per-model inference engines and the stream registry.

:class:`ModelEngine` runs one :class:`~ostinato.stream.infer.InferenceStage` per loaded
model, shared by every stream on that model, so windows of different streams are batched
together (``streaming.batch_size``); a router hands each result back to its stream.
:class:`StreamHub` opens, resumes, detaches and ends :class:`StreamSession` s, enforces the
stream limit, and records matches in the pattern library.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

from ostinato.catalog import ModelEntry
from ostinato.errors import ModelBusyError, ServiceError, TooManyStreamsError
from ostinato.models import StreamingConfig
from ostinato.stream.channel import Channel
from ostinato.stream.errors import ErrorClass, ProtocolError, StageError
from ostinato.stream.frames import StreamEnd, StreamFeatures, Window
from ostinato.stream.infer import InferenceConfig, InferenceStage
from ostinato.stream.wire import Hello
from ostinato.stream_options import SessionOptions
from ostinato.stream_session import StreamSession

__all__ = ["ModelEngine", "StreamHub", "StreamInUseError"]

logger = logging.getLogger(__name__)

_STREAM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class StreamInUseError(ServiceError):
    """A resume named a stream that is still attached to another connection.

    Transient: the usual cause is the client's own previous connection, which died without the
    server seeing it close yet; the server drops it once it stops answering pings (within
    ``1.5 * heartbeat_s``), and a retry then resumes the stream.
    """

    error_class = ErrorClass.TRANSIENT
    code = "stream_in_use"
    status = 409


class ModelEngine:
    """The shared inference stage of one loaded model, and the router of its results.

    Args:
        entry: The loaded catalog entry.
        hub: The stream hub (sessions to route to, metrics, health).
    """

    def __init__(self, entry: ModelEntry, hub: StreamHub) -> None:
        self.name = entry.config.name
        self.entry = entry
        self.streaming: StreamingConfig = entry.config.streaming
        self._hub = hub
        config = InferenceConfig(
            batch_size=self.streaming.batch_size, max_wait_ms=self.streaming.max_wait_ms,
            max_lag_s=self.streaming.max_lag_s, output=self.streaming.output or None,
        )
        self.stage = InferenceStage([entry.model], config, metrics=hub.metrics, health=hub.health, on_drop=self._on_drop)
        self.windower_config = self.stage.windower_config(self.streaming.windower_config())
        self.output = self.stage.output
        self.inbox: Channel[Window | StreamEnd] = Channel(self.streaming.max_queue, "block", name=f"server_inference_{self.name}")
        self._outbox: Channel[StreamFeatures | StreamEnd] = Channel(self.streaming.max_queue, "block", name=f"server_results_{self.name}")
        self.failed: BaseException | None = None
        self._task = asyncio.create_task(self._run(), name=f"engine-{self.name}")

    def breaker_state(self) -> str:
        """State of the inference circuit breaker."""
        return self.stage.breaker.state.value

    async def submit(self, item: Window | StreamEnd) -> None:
        """Queue a window (or a stream's end marker); waits while the shared queue is full.

        Raises:
            ServiceError: If the engine stopped (model unloaded or inference failed for good).
        """
        if self.failed is not None or self.inbox.closed:
            raise ServiceError(f"inference for model {self.name!r} stopped: {self.failed or 'model unloaded'}",
                               code="model_stopped", status=503, hint="start a new stream once the model is loaded again")
        await self.inbox.put(item)

    def abandon(self, stream_id: str, samples: int) -> None:
        """End marker for a stream whose session was cancelled before it sent one (never waits).

        The stage forgets the stream's per-stream state (conv-frame cache, K/V past) when the
        marker passes, behind the stream's queued windows; without it a failed or aborted
        session's state would stay until the engine stops.
        """
        if self.failed is None and not self.inbox.closed:
            self.inbox.put_control(StreamEnd(stream_id, samples))

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.stage.run(self.inbox, self._outbox))
                tg.create_task(self._route())
        except* (StageError, Exception) as group:
            self.failed = group.exceptions[0]
            logger.error("inference engine of %s failed: %s", self.name, self.failed)
            self._hub.engine_failed(self)
        finally:
            await self.stage.close()

    async def _route(self) -> None:
        async for item in self._outbox:
            session = self._hub.sessions.get(item.stream_id)
            if session is not None and session.engine is self:
                session.deliver(item)

    def _on_drop(self, window: Window, reason: str) -> None:
        session = self._hub.sessions.get(window.stream_id)
        if session is not None and session.engine is self:
            session.window_dropped(reason)

    async def stop(self) -> None:
        """Let queued windows finish, then stop the stage (model stays loaded)."""
        self.inbox.close()
        try:
            async with asyncio.timeout(10.0):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
        except Exception:  # already reported through engine_failed
            pass


class StreamHub:
    """Every live stream of one service.

    Args:
        service: The :class:`~ostinato.server.Service`.
    """

    def __init__(self, service: Any) -> None:
        self.service = service
        self.limits = service.limits
        self.metrics = service.metrics
        self.health = service.health
        self.sessions: dict[str, StreamSession] = {}
        self.engines: dict[str, ModelEngine] = {}
        self.accepting = True
        # Matchers run off the event loop; one thread per core is plenty (each call is short).
        self.match_executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="ostinato-match")
        self._matching: dict[str, Any] = {}
        self._reapers: set[asyncio.Task[None]] = set()
        #: Audio feeds being sent to receivers (ostinato.server_feed); they count towards max_streams.
        self.feeds = 0

    def active_count(self) -> int:
        """Streams open now (attached or waiting for a resume)."""
        return len(self.sessions)

    def breaker_states(self) -> dict[str, str]:
        """Inference breaker state per model engine."""
        return {name: engine.breaker_state() for name, engine in self.engines.items()}

    def streaming(self, engine: ModelEngine | None) -> StreamingConfig:
        """Stream settings of ``engine`` (the defaults for model-free streams)."""
        if engine is not None:
            return engine.streaming
        default = self.service.catalog.default_name
        return self.service.catalog.get(default).config.streaming if default else StreamingConfig()

    # -- opening -------------------------------------------------------------------------------

    def check_capacity(self) -> None:
        """Refuse one more stream or audio feed (both count towards ``max_streams``).

        Raises:
            TooManyStreamsError: At the stream limit or while shutting down (the connection that
                sends the error frame counts it in ``ostinato_server_rejected_total``).
        """
        if not self.accepting:
            raise TooManyStreamsError("the service is shutting down", code="shutting_down",
                                      hint="reconnect to another instance, or later")
        if len(self.sessions) + self.feeds >= self.limits.max_streams:
            raise TooManyStreamsError(f"{len(self.sessions) + self.feeds} streams are open; "
                                      f"the limit is {self.limits.max_streams}")

    def open(self, hello: Hello, options: SessionOptions, model: str | None) -> StreamSession:
        """Start a new stream.

        Raises:
            TooManyStreamsError: At the stream limit or while shutting down.
            ModelUnavailableError: The model is not loaded.
            ProtocolError: A bad stream id or media file.
        """
        self.check_capacity()
        stream_id = hello.stream_id or secrets.token_hex(16)
        if not _STREAM_ID_RE.match(stream_id):
            raise ProtocolError(f"hello.stream_id={stream_id!r}; expected 1-64 of A-Z a-z 0-9 . _ - (or empty)")
        if stream_id in self.sessions:
            raise ServiceError(f"stream {stream_id!r} is already open", code="stream_in_use", status=409,
                               hint="omit stream_id to get a fresh one, or resume with its resume_token")
        # A stream that only matches on log-mel needs no model; one that names a model gets it checked.
        entry = self.service.catalog.loaded(model) if model is not None or options.needs_model else None
        media: Path | None = None
        if options.file:
            media = self.media(options.file)
            hello = _file_hello(hello, media)
        engine = self._engine(entry) if entry is not None and options.needs_model else None
        matching = self.matching(options.match_features, engine) if options.match else None
        session = StreamSession(stream_id, hello, options, engine, matching, self, model_entry=entry, media_path=media)
        if entry is not None:
            entry.users += 1
        self.sessions[stream_id] = session
        self.metrics.active_streams.set(len(self.sessions))
        session.start()
        reaper = asyncio.create_task(self._reap(session), name=f"reap-{stream_id}")
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        return session

    def resume(self, hello: Hello, token: str) -> StreamSession:
        """Re-attach a detached stream.

        Raises:
            ServiceError: Unknown/expired id (``stream_expired``, permanent), wrong token,
                still attached, or different audio format.
        """
        import hmac

        session = self.sessions.get(hello.stream_id)
        if session is None or session.ended:
            raise ServiceError(f"stream {hello.stream_id!r} is gone (ended, or its {self.limits.resume_grace_s:g} s grace period passed)",
                               code="stream_expired", status=410, hint="start a new stream (send hello without stream_id)")
        if not hmac.compare_digest(token.encode(), session.resume_token.encode()):
            raise ServiceError("wrong resume_token for this stream", code="resume_refused", status=403,
                               hint="resume with the resume_token from the stream's ready frame")
        if session.attached:
            wait_s = 1.5 * self.limits.heartbeat_s
            raise StreamInUseError(
                f"stream {hello.stream_id!r} is still attached to another connection (the server has not seen it close yet)",
                hint=f"retry with backoff: a dead connection is dropped within {wait_s:g} s (when it stops answering "
                     "pings); close the other connection if it is still yours")
        if (hello.sample_rate, hello.encoding, hello.channels) != (session.hello.sample_rate, session.hello.encoding, session.hello.channels):
            raise ProtocolError(
                f"resume with sample_rate={hello.sample_rate}, encoding={hello.encoding}, channels={hello.channels}; the stream "
                f"was opened with {session.hello.sample_rate}, {session.hello.encoding}, {session.hello.channels}",
                hint="a stream keeps its audio format; start a new stream for a different format",
            )
        return session

    def media(self, name: str) -> Path:
        """The server media file called ``name``.

        Raises:
            ProtocolError: Not one of ``GET /v1/media``.
        """
        files = self.service.media_files()
        if name not in files:
            raise ProtocolError(f"hello.options.file={name!r} is not a server media file; available: {sorted(files)}",
                                hint="GET /v1/media lists the files")
        return Path(files[name])

    def _engine(self, entry: ModelEntry) -> ModelEngine:
        engine = self.engines.get(entry.config.name)
        if engine is None or engine.failed is not None or engine.entry is not entry or engine.entry.model is None:
            engine = ModelEngine(entry, self)
            self.engines[entry.config.name] = engine
        return engine

    def matching(self, match_features: str, engine: ModelEngine | None) -> Any:
        """The shared matcher session for a feature kind (``logmel`` or the engine's output).

        One :class:`~ostinato.stream.matcher_stage.MatcherSession` per kind holds the
        per-stream matchers (tuned with ``MatcherConfig.for_features``) and files matches in
        the service's pattern library.
        """
        from ostinato.stream.matcher_stage import MatcherSession, MatcherStageConfig
        from ostinato.stream.matcher_config import MatcherConfig, evidence_overrides

        features = "logmel"
        if match_features == "model" and engine is not None:
            layer = engine.output.removeprefix("hidden_state_")
            features = f"wav2vec2:{layer}" if layer.isdigit() else "wav2vec2"
        session = self._matching.get(features)
        if session is None:
            service = self.service.config
            overrides: dict[str, Any] = {"buffer_s": service.match_buffer_s}
            if features == "logmel" and service.match_min_evidence is not None:
                overrides.update(evidence_overrides(service.match_min_evidence))
            config = MatcherConfig.for_features(features, **overrides)
            session = MatcherSession(MatcherStageConfig(features=features, matcher=config))
            session.library = self.service.library  # shared; the service flushes and closes it
            if self.service.describer is not None:  # --describe-model: new patterns described (server_describe)
                session.attach_describer(self.service.describer)
            self._matching[features] = session
        return session

    # -- lifetime ------------------------------------------------------------------------------

    def detach(self, session: StreamSession) -> None:
        """The connection dropped without ``end``: keep the stream for the grace period."""
        session.attached = False
        session.detached_at_s = time.monotonic()
        if self.limits.resume_grace_s <= 0 or not self.accepting:
            task = asyncio.create_task(session.abort("error", "connection lost"))
        else:
            task = asyncio.create_task(self._expire(session))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _expire(self, session: StreamSession) -> None:
        stamp = session.detached_at_s
        await asyncio.sleep(self.limits.resume_grace_s)
        if not session.attached and session.detached_at_s == stamp and not session.finished.is_set():
            await session.abort("error", f"not resumed within {self.limits.resume_grace_s:g} s")

    async def _reap(self, session: StreamSession) -> None:
        await session.finished.wait()
        # Keep a finished stream until its bye was delivered (or the client is gone).
        while session.attached and len(session.outbox):
            await asyncio.sleep(0.05)
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]
        entry = session.model_entry
        if entry is not None:
            entry.users = max(0, entry.users - 1)
        self.metrics.active_streams.set(len(self.sessions))

    def engine_failed(self, engine: ModelEngine) -> None:
        """Tell every stream of a failed engine (permanent error) and end them."""
        for session in list(self.sessions.values()):
            if session.engine is engine:
                session.send_error(ServiceError(f"inference failed for good: {engine.failed}", code="inference_failed",
                                                hint="the model cannot run; check GET /readyz and the server log"), fatal=True)
                session.fail()

    async def release_model(self, name: str, *, force: bool) -> None:
        """Before unloading ``name``: refuse (busy) or end its streams, then stop its engine.

        Raises:
            ModelBusyError: Streams use the model and ``force`` is false.
        """
        users = [s for s in self.sessions.values() if s.model_entry is not None and s.model_entry.config.name == name]
        if users and not force:
            raise ModelBusyError(f"model {name!r} is used by {len(users)} stream(s)")
        for s in users:
            s.send_error(ServiceError(f"model {name!r} was unloaded by an operator", code="model_unloaded",
                                      hint="start a new stream once a model is loaded"), fatal=True)
        await asyncio.gather(*(s.abort("error", "model unloaded") for s in users))
        engine = self.engines.pop(name, None)
        if engine is not None:
            await engine.stop()

    async def shutdown(self, timeout_s: float) -> None:
        """Graceful stop: refuse new streams, end every stream (``bye``), drain, stop engines."""
        self.accepting = False
        sessions = list(self.sessions.values())
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(s.abort("shutdown", "server shutdown") for s in sessions))
                while any(s.attached and len(s.outbox) for s in sessions):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            logger.warning("shutdown: %d stream(s) did not drain within %.1f s", sum(not s.finished.is_set() for s in sessions), timeout_s)
        for engine in list(self.engines.values()):
            await engine.stop()
        self.engines.clear()
        for task in list(self._reapers):
            task.cancel()
        self.match_executor.shutdown(wait=True, cancel_futures=False)


def _file_hello(hello: Hello, path: Path) -> Hello:
    import dataclasses

    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ProtocolError(f"media file {path.name!r} cannot be decoded: {e}") from e
    return dataclasses.replace(hello, sample_rate=int(info.samplerate), channels=int(info.channels), encoding="f32le")
