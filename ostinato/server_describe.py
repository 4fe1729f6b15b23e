"""Pattern descriptions in the service (``ostinato serve --describe-model GAMA_DIR``).

- At start-up the GAMA export is loaded into one
  :class:`~ostinato.stream.pattern_describe.PatternDescriber` (one worker: one clip at a time,
  a bounded queue). Every stream with matching on describes its new patterns with it, as
  ``ostinato run --describe-model`` does; the text lands in the pattern's library metadata
  (``"description"``) and, while the stream is open, as a ``describe`` event frame.
- ``POST /v1/patterns/{id}/describe`` (JSON body ``{"prompt": "..."}`` optional; ``?wait=false``
  answers 202 at once) describes a stored pattern again from its stored clip
  (``<library>.clips/<id>.flac``, written when a stream found it while describing was on).
  Errors: 503 ``describe_unavailable`` (no describe model) or ``describe_busy`` (queue full),
  404 (no library / no such pattern), 409 ``no_clip``, 500 ``describe_failed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from ostinato.errors import ServiceError
from ostinato.server import SERVICE_KEY, Service
from ostinato.stream.errors import ErrorClass
from ostinato.stream.events import DescribeEvent, event_to_json

__all__ = ["DescribeBusyError", "DescribeUnavailableError", "setup"]

logger = logging.getLogger(__name__)

_MAX_PROMPT_CHARS = 1000


class DescribeUnavailableError(ServiceError, RuntimeError):
    """The server runs without a describe model."""

    error_class = ErrorClass.PERMANENT
    code = "describe_unavailable"
    status = 503
    default_hint = "start the server with --describe-model GAMA_DIR (made by `ostinato export gama`)"


class DescribeBusyError(ServiceError, RuntimeError):
    """The describe queue is full."""

    error_class = ErrorClass.TRANSIENT
    code = "describe_busy"
    status = 503
    default_hint = "one clip is described at a time; retry in a minute"


def setup(app: web.Application) -> None:
    """Add the describe route; with ``describe_model`` configured, load it at start-up."""
    app.router.add_post("/v1/patterns/{id}/describe", describe_pattern)
    service = app[SERVICE_KEY]
    if service.config.describe_model is None:
        return

    async def startup(_app: web.Application) -> None:
        _start(service)

    app.on_startup.append(startup)


def _start(service: Service) -> None:
    from ostinato.stream.clip_store import ClipStore, clip_dir_for
    from ostinato.stream.pattern_describe import PatternDescriber

    config = service.config
    if config.describe_model is None:
        return
    clips = ClipStore(clip_dir_for(config.library_path)) if config.library_path is not None else None
    ring_s = config.describe_ring_s or max(60.0, config.match_buffer_s + 11.0)
    settings = {"prompt": config.describe_prompt, "ring_s": ring_s}
    describer = PatternDescriber.open(config.describe_model, settings, clips=clips,
                                      metrics=service.metrics)
    describer.listeners.append(lambda event: _to_stream(service, event))
    service.describer = describer
    logger.info("describe model %s loaded%s", config.describe_model,
                " (RANDOM WEIGHTS: descriptions are meaningless)" if describer.config.random_weights else "")

    async def stop() -> None:
        # Streams are drained by now; queued descriptions are dropped (counted: shutdown). Their
        # clips are stored, so POST /v1/patterns/{id}/describe can describe them later.
        service.describer = None
        await describer.close()

    service.on_cleanup(stop)


def _to_stream(service: Service, event: DescribeEvent) -> None:
    """A description arrives seconds after its match: send it to the stream if still open."""
    hub = service.streams
    session = hub.sessions.get(event.stream) if hub is not None else None
    if session is not None:
        session.publish_late([event])  # False: the stream said bye; the text is in the library


async def _prompt(request: web.Request) -> str | None:
    if not request.can_read_body:
        return None
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ServiceError(f"body is not JSON: {e}", code="bad_request", status=400,
                           hint='send {"prompt": "..."} or no body') from e
    prompt = body.get("prompt") if isinstance(body, dict) else body
    if prompt is None:
        return None
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > _MAX_PROMPT_CHARS:
        raise ServiceError(f"prompt={str(prompt)[:80]!r}; expected a non-empty string of at most {_MAX_PROMPT_CHARS} characters",
                           code="bad_request", status=400)
    return prompt


async def describe_pattern(request: web.Request) -> web.Response:
    """Describe a stored pattern from its clip; 200 with the ``describe`` event (or 202 queued)."""
    from ostinato.server_library import _library, _not_found_as_404
    from ostinato.stream.pattern_describe import ClipRequest

    service = request.app[SERVICE_KEY]
    describer = service.describer
    if describer is None:
        raise DescribeUnavailableError("this server has no describe model")
    library = _library(request)
    pid = request.match_info["id"]
    prompt = await _prompt(request)
    pattern = await asyncio.to_thread(_not_found_as_404, lambda: library.get(pid), pid)
    clip = await asyncio.to_thread(describer.clips.get, pattern.id) if describer.clips is not None else None
    if clip is None:
        raise ServiceError(f"pattern {pattern.id!r} has no stored audio clip", code="no_clip", status=409,
                           hint="clips are stored when a stream finds a pattern while the server runs with "
                                "--describe-model and --library; patterns found before have none")
    audio, rate, info = clip
    if rate != 16000:
        from ostinato.runtime.audio import resample

        audio = resample(audio, rate, 16000)
    occurrence = info.get("occurrence") if info.get("occurrence") in ("first", "latest") else "first"
    job = ClipRequest(pattern.id, str(info.get("stream", "")), audio, float(info.get("start_s", 0.0)), occurrence, prompt)
    future = describer.request(job, library)
    if future is None:
        raise DescribeBusyError(f"the describe queue is full ({describer.worker.config.queue_size} waiting)")
    if request.query.get("wait", "true").lower() in ("0", "false", "no"):
        return web.json_response({"pattern_id": pattern.id, "status": "queued"}, status=202)
    event = await asyncio.shield(future)  # the job finishes (and is stored) even if the client leaves
    if event.error is not None:
        raise ServiceError(f"describing {pattern.id!r} failed: {event.error}", code="describe_failed", status=500,
                           hint="the error is recorded in the pattern's metadata; check the model with `ostinato describe`")
    return web.json_response({"pattern_id": pattern.id, "description": _event_json(event)})


def _event_json(event: DescribeEvent) -> dict[str, Any]:
    return dict(json.loads(event_to_json(event)))
