"""``/v1/patterns…``: the pattern library over REST (what ``ostinato library`` does on the CLI).

- ``GET /v1/patterns?tag=&stream=&since=&until=&limit=``: patterns, most recently updated first;
- ``GET /v1/patterns/{id}``: one pattern with its occurrences and relationships;
- ``GET /v1/patterns/{id}/similar?k=``: the patterns most similar to it;
- ``POST /v1/patterns/query?k=``: by example — upload a clip (WAV/FLAC/OGG), get the top-k.

The library is the one the live streams write to (``ostinato serve --library FILE.db``);
SQLite work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from ostinato.errors import ServiceError
from ostinato.server import SERVICE_KEY
from ostinato.server_rest import decode_upload

__all__ = ["setup"]

_MAX_LIMIT = 1000


def setup(app: web.Application) -> None:
    """Add the library routes."""
    r = app.router
    r.add_get("/v1/patterns", list_patterns)
    r.add_post("/v1/patterns/query", query_patterns)
    r.add_get("/v1/patterns/{id}", get_pattern)
    r.add_get("/v1/patterns/{id}/similar", similar_patterns)


def _library(request: web.Request) -> Any:
    library = request.app[SERVICE_KEY].library
    if library is None:
        raise ServiceError("this server has no pattern library", code="library_unavailable", status=404,
                           hint="start the server with --library FILE.db")
    return library


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= high:
        raise ServiceError(f"{name}={text!r}; expected an integer in 1..{high}", code="bad_query", status=400)
    return value


def _time(request: web.Request, name: str) -> float | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ServiceError(f"{name}={text!r}; expected Unix seconds", code="bad_query", status=400)
    return value


def _with_scores(rows: list[tuple[Any, float]]) -> list[dict[str, Any]]:
    return [{**p.summary(), "similarity": round(s, 4)} for p, s in rows]


async def list_patterns(request: web.Request) -> web.Response:
    """Patterns filtered by tag, stream and occurrence time."""
    library = _library(request)
    kwargs = {"tag": request.query.get("tag"), "stream": request.query.get("stream"), "since": _time(request, "since"),
              "until": _time(request, "until"), "limit": _int(request, "limit", 100, _MAX_LIMIT)}
    rows = await asyncio.to_thread(library.list, **kwargs)
    total = await asyncio.to_thread(library.count)
    return web.json_response({"total": total, "patterns": [p.summary() for p in rows]})


async def get_pattern(request: web.Request) -> web.Response:
    """One pattern, its occurrences (oldest first) and relationships."""
    library = _library(request)
    pid = request.match_info["id"]

    def read() -> dict[str, Any]:
        pattern = library.get(pid)
        occurrences = [{"stream": o.stream, "start_s": o.start_s, "end_s": o.end_s, "score": o.score,
                        "recorded_at": o.recorded_at} for o in library.occurrences(pid, limit=_int(request, "limit", 1000, 10_000))]
        return {**pattern.summary(), "occurrences": occurrences, "relationships": library.relationships(pid)}

    return web.json_response(await asyncio.to_thread(_not_found_as_404, read, pid))


async def similar_patterns(request: web.Request) -> web.Response:
    """Patterns most similar to ``{id}`` (itself excluded)."""
    library = _library(request)
    pid = request.match_info["id"]
    k = _int(request, "k", 10, 100)

    def read() -> list[tuple[Any, float]]:
        own = library.get(pid)
        return [(p, s) for p, s in library.query_vector(own.embedding, k + 1) if p.id != own.id][:k]

    rows = await asyncio.to_thread(_not_found_as_404, read, pid)
    return web.json_response({"patterns": _with_scores(rows)})


async def query_patterns(request: web.Request) -> web.Response:
    """Query by example: the top-k patterns most similar to an uploaded clip."""
    service = request.app[SERVICE_KEY]
    library = _library(request)
    k = _int(request, "k", 10, 100)
    audio = await decode_upload(request)
    space = await asyncio.to_thread(library.feature_space)
    if space is None:
        return web.json_response({"patterns": []})
    features = str(space["feature"]).rsplit("/", 1)[0]
    frames = None
    if features != "logmel":
        from ostinato.stream.embedding import model_output_for

        entry = service.catalog.loaded(request.query.get("model"))
        output = model_output_for(features)
        loop = asyncio.get_running_loop()
        frames = (await loop.run_in_executor(entry.executor, entry.model.features, audio, 16000, output)).frames
    vector = await asyncio.to_thread(_clip_vector, audio, frames, str(space["feature"]))
    rows = await asyncio.to_thread(library.query_vector, vector, k)
    return web.json_response({"feature": space["feature"], "patterns": _with_scores(rows)})


def _clip_vector(audio: Any, model_frames: Any, library_feature: str) -> Any:
    """The library embedding of a clip, in the feature space the library holds."""
    from ostinato.runtime.logmel import LogMel
    from ostinato.stream.embedding import FeatureSpaceMismatch, query_embedding

    logmel = LogMel().compute(audio)
    frames = logmel.features.frames if model_frames is None else model_frames
    try:
        return query_embedding(frames, logmel.energy_db, library_feature)
    except FeatureSpaceMismatch as e:
        raise ServiceError(f"the clip embeds as {e.name!r}; the library holds {library_feature!r}", code="feature_mismatch",
                           status=422, hint="query with the model the library was built with (?model=NAME)") from e
    except ValueError as e:
        raise ServiceError(f"cannot embed the clip: {e}", code="bad_audio", status=422,
                           hint="send a clip with at least a second of non-silent audio") from e


def _not_found_as_404(fn: Any, pid: str) -> Any:
    from ostinato.stream.library import PatternNotFoundError

    try:
        return fn()
    except PatternNotFoundError as e:
        raise ServiceError(f"no pattern {pid!r} in the library", code="pattern_not_found", status=404,
                           hint="GET /v1/patterns lists the ids") from e
