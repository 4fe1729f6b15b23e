"""The ostinato network service: one aiohttp application.

Routes (documented in ``docs/service.md``; the REST part also in ``GET /v1/openapi.json``):

- ``GET /v1/stream``: WebSocket, the wire protocol of ``docs/protocol.md``
  (:mod:`ostinato.server_stream`);
- ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/models…``, ``/v1/features``,
  ``/v1/patterns…``, ``/v1/media``, ``/v1/openapi.json`` (:mod:`ostinato.server_rest`);
- ``GET /`` and ``/static/…``: the dashboard (``ostinato/static``).

Start with :func:`serve` (what ``ostinato serve`` runs) or build the application with
:func:`build_app` (tests). Shutdown on SIGTERM/SIGINT is graceful: stop accepting, send ``bye``
to every stream, drain, flush the pattern library, unload the models, exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import signal
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ostinato.auth import auth_middleware
from ostinato.cors import cors_middleware
from ostinato.catalog import ModelCatalog
from ostinato.errors import ServiceError
from ostinato.limits import ServiceLimits
from ostinato.models import ModelConfig
from ostinato.stream.errors import ErrorClass, StreamError, classify_error
from ostinato.stream.health import HealthMonitor
from ostinato.stream.matcher_config import evidence_overrides
from ostinato.stream.metrics import StreamMetrics

__all__ = [
    "SERVICE_KEY", "STATIC_DIR", "RunningServer", "ServerConfig", "Service", "build_app", "is_loopback", "problem",
    "serve", "start_server",
]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_DATA_DIR = Path(__file__).parent / "data"


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the service runs.

    Args:
        host: Address to bind (loopback by default).
        port: TCP port (0: any free port).
        token: Bearer token required on every route but ``/healthz`` (``None``: no auth).
        library_path: SQLite pattern library (``None``: none; matches are not persisted).
        limits: Resource bounds.
        allowed_origins: Browser origins allowed besides the service's own.
        cors_origins: Browser origins that may also read REST answers (CORS headers, preflight);
            they pass the Origin check too. Empty: same-origin only.
        media_dir: Directory of audio files the dashboard may stream server-side (the packaged
            demo WAV is always offered).
        shutdown_timeout_s: How long shutdown waits for streams to drain.
        max_models: Models configured at once.
        match_buffer_s: Audio history each stream's matcher searches (memory grows with it).
        match_min_evidence: Pair evidence a log-mel repeat needs (``None``: the default 0.6, 0.45
            for aligned pairs; this sets both). Higher: fewer false alarms, less recall under
            noise (docs/matcher.md, *Operating points*). Model-feature streams do not verify.
        describe_model: GAMA export that describes new patterns and answers
            ``POST /v1/patterns/{id}/describe`` (``None``: no descriptions; docs/gama.md).
        describe_prompt: Instruction for the describe model (``None``: GAMA's default).
        describe_ring_s: Audio kept per stream to cut clips from (``None``: ``match_buffer_s``
            + 11 s, at least 60 s; 32 kB per second per stream).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    library_path: Path | None = None
    limits: ServiceLimits = ServiceLimits()
    allowed_origins: frozenset[str] = frozenset()
    cors_origins: frozenset[str] = frozenset()
    media_dir: Path | None = None
    shutdown_timeout_s: float = 10.0
    max_models: int = 4
    match_buffer_s: float = 120.0
    match_min_evidence: float | None = None
    describe_model: Path | None = None
    describe_prompt: str | None = None
    describe_ring_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port}; expected 0..65535")
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s={self.shutdown_timeout_s}; expected >= 0")
        if self.max_models < 1:
            raise ValueError(f"max_models={self.max_models}; expected >= 1")
        if not 10.0 <= self.match_buffer_s <= 24 * 3600:
            raise ValueError(f"match_buffer_s={self.match_buffer_s}; expected 10 .. 86400 s")
        if self.match_min_evidence is not None:
            try:
                evidence_overrides(self.match_min_evidence)
            except ValueError as e:
                raise ValueError(f"match_min_evidence={self.match_min_evidence}; {e}, or None") from e


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only the local machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Service:
    """Everything one running service holds; shared by the route handlers.

    Args:
        config: Server settings.
        metrics: Metrics registry (a fresh one when omitted).
    """

    def __init__(self, config: ServerConfig, metrics: StreamMetrics | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.metrics = metrics if metrics is not None else StreamMetrics()
        self.health = HealthMonitor(metrics=self.metrics)
        self.catalog = ModelCatalog(config.max_models)
        self.started_s = time.time()
        self.shutting_down = False
        self.library: Any = None
        # Set by ostinato.server_describe at start-up with --describe-model; None otherwise.
        self.describer: Any = None
        # Set by ostinato.server_stream.setup(); None until then.
        self.streams: Any = None
        self._cleanups: list[Callable[[], Awaitable[None]]] = []

    def media_files(self) -> dict[str, Path]:
        """Audio files the dashboard may stream server-side, by name."""
        files = {"demo.wav": _DATA_DIR / "demo.wav"} if (_DATA_DIR / "demo.wav").is_file() else {}
        if self.config.media_dir is not None and self.config.media_dir.is_dir():
            for p in sorted(self.config.media_dir.iterdir()):
                if p.suffix.lower() in (".wav", ".flac", ".ogg") and p.is_file():
                    files[p.name] = p
        return files

    def on_cleanup(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine to run at shutdown (after streams are drained)."""
        self._cleanups.append(fn)

    async def open_library(self) -> None:
        """Open the pattern library when one is configured."""
        if self.config.library_path is None:
            return
        from ostinato.stream.library import PatternLibrary

        self.library = await asyncio.to_thread(PatternLibrary, self.config.library_path)

    async def drain(self) -> None:
        """Stop accepting streams, send ``bye`` to every stream and let them drain."""
        self.shutting_down = True
        if self.streams is not None:
            await self.streams.shutdown(self.config.shutdown_timeout_s)

    async def close(self) -> None:
        """Drain streams, then flush and close the library and unload models (idempotent)."""
        await self.drain()
        for fn in reversed(self._cleanups):
            try:
                await fn()
            except Exception:
                logger.exception("shutdown step failed")
        self._cleanups.clear()
        if self.library is not None:
            library, self.library = self.library, None
            await asyncio.to_thread(library.close)
        await self.catalog.close()


SERVICE_KEY = web.AppKey("ostinato_service", Service)


def problem(status: int, code: str, message: str, *, error_class: str = "input", hint: str = "", **extra: Any) -> web.Response:
    """An HTTP error response with the service's JSON problem body.

    Body: ``{"error": {"code", "message", "error_class", "hint", ...extra}}``.
    """
    body = {"code": code, "message": message, "error_class": error_class, "hint": hint, **extra}
    return web.json_response({"error": body}, status=status)


def _error_response(e: Exception) -> web.Response:
    hint = getattr(e, "hint", "") or ""
    message = str(e).removesuffix(f" (hint: {hint})") if hint else str(e)
    if isinstance(e, ServiceError):
        extra = {"field": e.field} if hasattr(e, "field") else {}
        return problem(e.status, e.code, message, error_class=e.error_class.value, hint=hint, **extra)
    error_class = classify_error(e)
    status = {ErrorClass.INPUT: 400, ErrorClass.TRANSIENT: 503, ErrorClass.PERMANENT: 500}[error_class]
    code = {400: "bad_input", 503: "unavailable", 500: "failed"}[status]
    return problem(status, code, message, error_class=error_class.value, hint=hint)


@web.middleware
async def _error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    try:
        response = await handler(request)
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            response = problem(e.status, e.reason.lower().replace(" ", "_"), e.reason, hint=_route_hint(e.status))
        else:
            raise
    except (ServiceError, StreamError) as e:
        response = _error_response(e)
    except Exception as e:
        from ostinato.runtime.errors import SessionError

        if isinstance(e, SessionError):
            response = _error_response(e)
        else:
            # Never show a stack trace to a client: log it with an id the client can quote.
            incident = uuid.uuid4().hex[:12]
            logger.error("internal error %s on %s %s:\n%s", incident, request.method, request.path, traceback.format_exc())
            response = problem(500, "internal", f"internal error (incident {incident}, logged by the server)",
                               error_class="permanent", hint="report the incident id to the server's operator")
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    service.metrics.http_requests.labels(route, str(response.status)).inc()
    if response.status in (401, 403):
        service.metrics.rejected.labels("auth").inc()
    return response


def _route_hint(status: int) -> str:
    return {404: "GET /v1/openapi.json lists the routes", 405: "see GET /v1/openapi.json for allowed methods",
            413: "send a smaller body"}.get(status, "")


def build_app(config: ServerConfig, *, models: list[ModelConfig] = (), metrics: StreamMetrics | None = None) -> web.Application:  # type: ignore[assignment]
    """Build the aiohttp application.

    Args:
        config: Server settings.
        models: Models to initialize and load at start-up (the first is the default).
        metrics: Metrics registry (a fresh one when omitted).

    Returns:
        The application; its :class:`Service` is ``app[SERVICE_KEY]``.
    """
    from ostinato import server_describe, server_library, server_rest, server_stream

    service = Service(config, metrics)
    # Our own limits apply below this (with error frames); aiohttp's cap is the hard stop.
    app = web.Application(
        middlewares=[cors_middleware(config.cors_origins), _error_middleware,
                     auth_middleware(config.token, config.allowed_origins | config.cors_origins)],
        client_max_size=config.limits.max_upload_bytes + 64 * 1024,
    )
    app[SERVICE_KEY] = service
    server_rest.setup(app)
    server_library.setup(app)
    server_stream.setup(app)
    server_describe.setup(app)

    async def startup(_app: web.Application) -> None:
        await service.open_library()
        for model_config in models:
            service.catalog.initialize(model_config)
            await service.catalog.load(model_config.name)

    async def shutdown(_app: web.Application) -> None:
        await service.drain()

    async def cleanup(_app: web.Application) -> None:
        await service.close()

    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app


def serve(config: ServerConfig, models: list[ModelConfig], *, ready: Callable[[str], None] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT, then shut down gracefully.

    Args:
        config: Server settings.
        models: Models to load at start-up.
        ready: Called with the listening URL once the socket is bound.

    Returns:
        Process exit code (0 after a graceful shutdown).
    """
    return asyncio.run(_serve(config, models, ready))


@dataclasses.dataclass(slots=True)
class RunningServer:
    """A started service (see :func:`start_server`).

    Attributes:
        runner: The aiohttp runner.
        url: ``http://host:port`` it listens on.
    """

    runner: web.AppRunner
    url: str

    @property
    def service(self) -> Service:
        """The service state."""
        return self.runner.app[SERVICE_KEY]

    @property
    def ws_url(self) -> str:
        """``ws://host:port/v1/stream``."""
        return "ws" + self.url.removeprefix("http") + "/v1/stream"

    async def stop(self) -> None:
        """Graceful stop: no new connections, ``bye`` to streams, drain, flush, unload."""
        # AppRunner.cleanup stops the sites first (no new connections), then runs on_shutdown
        # (streams get bye and drain), then on_cleanup (library flushed, models unloaded).
        await self.runner.cleanup()


async def start_server(config: ServerConfig, models: list[ModelConfig] = ()) -> RunningServer:  # type: ignore[assignment]
    """Build the application, load the models, and listen.

    Args:
        config: Server settings (``port=0`` picks a free port).
        models: Models to load at start-up.

    Returns:
        The running server.
    """
    app = build_app(config, models=list(models))
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None,
        keepalive_timeout=config.limits.header_timeout_s, shutdown_timeout=config.shutdown_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ServiceError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}", code="bind_failed",
                           hint="choose a free --port, and a --host address this machine has") from e
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1] if runner.addresses else config.port
    host = f"[{config.host}]" if ":" in config.host else config.host
    return RunningServer(runner, f"http://{host}:{port}")


async def _serve(config: ServerConfig, models: list[ModelConfig], ready: Callable[[str], None] | None) -> int:
    server = await start_server(config, models)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("ostinato serving on %s", server.url)
    if ready is not None:
        ready(server.url)
    try:
        await stop.wait()
        logger.info("shutting down: no new connections, telling streams bye, draining")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
    return 0
