"""REST routes of the service: health, readiness, metrics, model lifecycle, features, media.

Every error is a JSON problem body ``{"error": {"code", "message", "error_class", "hint"}}``
(plus ``field`` for a bad model config, status 422). The API is described in OpenAPI 3 by
:mod:`ostinato.openapi` and served at ``GET /v1/openapi.json``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ostinato.catalog import ModelState
from ostinato.errors import ModelConfigError, ServiceError
from ostinato.models import ModelConfig
from ostinato.openapi import build_openapi
from ostinato.server import SERVICE_KEY, STATIC_DIR, Service

__all__ = ["decode_upload", "setup"]

logger = logging.getLogger(__name__)

_FEATURE_FORMATS = {"msgpack": "application/msgpack", "npy": "application/x-npy"}


def setup(app: web.Application) -> None:
    """Add the REST routes and the dashboard's static files to ``app``."""
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/v1/openapi.json", openapi)
    r.add_get("/v1/models", list_models)
    r.add_post("/v1/models", create_model)
    r.add_get("/v1/models/{name}", get_model)
    r.add_delete("/v1/models/{name}", delete_model)
    r.add_post("/v1/models/{name}/load", load_model)
    r.add_post("/v1/models/{name}/unload", unload_model)
    r.add_post("/v1/features", features)
    r.add_get("/v1/media", media)
    r.add_get("/", index)
    r.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)


def _service(request: web.Request) -> Service:
    return request.app[SERVICE_KEY]


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers (no auth, no dependency checks)."""
    service = _service(request)
    return web.json_response({"status": "ok", "uptime_s": round(time.time() - service.started_s, 3)})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: a model is loaded, inference breakers are not open, not shutting down."""
    service = _service(request)
    reasons: list[str] = []
    if service.shutting_down:
        reasons.append("shutting down")
    models: dict[str, Any] = {}
    for entry in service.catalog.entries():
        info: dict[str, Any] = {"state": entry.state.value}
        if entry.model is not None:
            info["provider"] = entry.model.session.providers[0]
            info["provider_fell_back"] = bool(entry.model.session.fell_back)
        models[entry.config.name] = info
    default = service.catalog.default_name
    if default is None:
        reasons.append("no model configured (POST /v1/models)")
    elif service.catalog.get(default).state is not ModelState.LOADED:
        entry = service.catalog.get(default)
        reasons.append(f"default model {default!r} is {entry.state.value}" + (f": {entry.error}" if entry.error else ""))
    breakers = service.streams.breaker_states() if service.streams is not None else {}
    reasons += [f"inference breaker of {name!r} is open" for name, state in breakers.items() if state == "open"]
    health = service.health.overall()
    body = {
        "ready": not reasons,
        "reasons": reasons,
        "default_model": default,
        "models": models,
        "breakers": breakers,
        "health": {"state": health.state.value, "stage": health.stage, "reasons": list(health.reasons)},
        "streams": service.streams.active_count() if service.streams is not None else 0,
        "max_streams": service.limits.max_streams,
        "library": service.library is not None,
    }
    return web.json_response(body, status=200 if not reasons else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: the service registry plus the process-wide runtime metrics."""
    service = _service(request)
    body = generate_latest(service.metrics.registry) + generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The REST API in OpenAPI 3.1."""
    return web.json_response(build_openapi())


async def index(request: web.Request) -> web.FileResponse:
    """The dashboard page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def media(request: web.Request) -> web.Response:
    """Server-side audio files the dashboard may stream (``hello.options.file``)."""
    files = _service(request).media_files()
    return web.json_response({"files": [{"name": n, "bytes": p.stat().st_size} for n, p in files.items()]})


# -- model lifecycle ---------------------------------------------------------------------------


async def list_models(request: web.Request) -> web.Response:
    """Every configured model with its lifecycle state."""
    service = _service(request)
    return web.json_response({
        "default": service.catalog.default_name,
        "models": [{"name": e.config.name, **e.describe()} for e in service.catalog.entries()],
    })


async def get_model(request: web.Request) -> web.Response:
    """One model."""
    entry = _service(request).catalog.get(request.match_info["name"])
    return web.json_response({"name": entry.config.name, **entry.describe()})


async def create_model(request: web.Request) -> web.Response:
    """Initialize (and unless ``?load=false``, load) a model from a JSON config."""
    service = _service(request)
    if service.shutting_down:
        raise ServiceError("the service is shutting down", code="shutting_down", status=503, hint="retry on another instance")
    try:
        body = await request.json(loads=_strict_json)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise ModelConfigError("(body)", f"not valid JSON: {e}") from e
    config = await asyncio.to_thread(ModelConfig.from_json, body)  # stats the model dir
    entry = service.catalog.initialize(config, replace=request.query.get("replace") == "true")
    if request.query.get("load", "true") != "false":
        # A failed load leaves the entry "failed" with its reason (GET shows it; DELETE removes it).
        await service.catalog.load(config.name)
    return web.json_response({"name": config.name, **entry.describe()}, status=201)


async def load_model(request: web.Request) -> web.Response:
    """Load a configured model (idempotent)."""
    entry = await _service(request).catalog.load(request.match_info["name"])
    return web.json_response({"name": entry.config.name, **entry.describe()})


async def unload_model(request: web.Request) -> web.Response:
    """Release a model's session; ``?force=true`` ends the streams using it first."""
    service = _service(request)
    name = request.match_info["name"]
    force = request.query.get("force") == "true"
    await _stop_streams(service, name, force)
    entry = await service.catalog.unload(name, force=force)
    return web.json_response({"name": entry.config.name, **entry.describe()})


async def delete_model(request: web.Request) -> web.Response:
    """Unload and forget a model (dispose)."""
    service = _service(request)
    name = request.match_info["name"]
    force = request.query.get("force") == "true"
    service.catalog.get(name)
    await _stop_streams(service, name, force)
    await service.catalog.dispose(name, force=force)
    return web.Response(status=204)


async def _stop_streams(service: Service, name: str, force: bool) -> None:
    if service.streams is not None:
        await service.streams.release_model(name, force=force)


def _strict_json(text: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON does not, and neither do we.
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


# -- features ----------------------------------------------------------------------------------


async def features(request: web.Request) -> web.Response:
    """Upload WAV/FLAC/OGG (raw body or multipart field ``file``) → frame features.

    Query: ``model`` (default model), ``output`` (default output), ``format`` ``msgpack``
    (default) or ``npy`` (or ``Accept: application/x-npy``).
    """
    service = _service(request)
    fmt = request.query.get("format") or ("npy" if "application/x-npy" in request.headers.get("Accept", "") else "msgpack")
    if fmt not in _FEATURE_FORMATS:
        raise ServiceError(f"format={fmt!r}; expected one of {sorted(_FEATURE_FORMATS)}", code="bad_format", status=400)
    entry = service.catalog.loaded(request.query.get("model"))
    audio = await decode_upload(request)
    model = entry.model
    output = request.query.get("output") or model.default_output
    if output not in model.output_names:
        raise ServiceError(f"output={output!r}; this model has {list(model.output_names)}", code="bad_output", status=400)
    entry.users += 1
    try:
        loop = asyncio.get_running_loop()
        feats = await loop.run_in_executor(entry.executor, model.features, audio, model.sample_rate, output)
    finally:
        entry.users -= 1
    body = _encode_features(feats, fmt, model)
    return web.Response(body=body, content_type=_FEATURE_FORMATS[fmt],
                        headers={"X-Ostinato-Frames": str(len(feats)), "X-Ostinato-Random-Weights": str(bool(model.manifest.random_init)).lower()})


async def decode_upload(request: web.Request) -> npt.NDArray[np.float32]:
    """Read an uploaded audio file within the service's limits and decode it to 16 kHz mono.

    Raises:
        ServiceError: 413 (too large or too long), 408 (too slow), 415 (not audio), 422
            (empty, too short, NaN/Inf), 400 (multipart without ``file``).
    """
    service = _service(request)
    limits = service.limits
    if request.content_length is not None and request.content_length > limits.max_upload_bytes:
        service.metrics.rejected.labels("upload_size").inc()
        raise _too_large(request.content_length, limits.max_upload_bytes)
    try:
        async with asyncio.timeout(limits.upload_timeout_s):
            data = await _read_upload(request, limits.max_upload_bytes)
    except TimeoutError as e:
        service.metrics.rejected.labels("upload_timeout").inc()
        raise ServiceError(f"the upload did not arrive within {limits.upload_timeout_s:g} s", code="upload_timeout",
                           status=408, hint="send the body faster, or a smaller file") from e
    if data is None:
        service.metrics.rejected.labels("upload_size").inc()
        raise _too_large(None, limits.max_upload_bytes)
    return await asyncio.to_thread(_decode_audio, data, limits.max_upload_audio_s)


def _too_large(size: int | None, limit: int) -> ServiceError:
    got = f"{size} bytes" if size is not None else "more than that"
    return ServiceError(f"upload is {got}; the limit is {limit} bytes", code="upload_too_large", status=413,
                        hint="send a shorter clip, or stream long audio over /v1/stream")


async def _read_upload(request: web.Request, limit: int) -> bytes | None:
    """The audio bytes of the upload, or ``None`` when they exceed ``limit``."""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise ServiceError("multipart upload has no 'file' part", code="bad_upload", status=400,
                                   hint="send the audio as form field 'file' or as the raw body")
            if getattr(part, "name", None) == "file":
                return await _read_limited(part.read_chunk, limit)  # type: ignore[union-attr]
            await part.release()
    return await _read_limited(lambda: request.content.read(64 * 1024), limit)


async def _read_limited(read: Any, limit: int) -> bytes | None:
    buf = bytearray()
    while True:
        chunk = await read()
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            return None


def _decode_audio(data: bytes, max_audio_s: float) -> npt.NDArray[np.float32]:
    import soundfile as sf

    from ostinato.runtime.audio import resample, to_mono

    if not data:
        raise ServiceError("the upload is empty", code="bad_audio", status=400, hint="send a WAV, FLAC or OGG file")
    try:
        info = sf.info(io.BytesIO(data))
        if info.frames / max(info.samplerate, 1) > max_audio_s:
            raise ServiceError(
                f"audio is {info.frames / info.samplerate:.1f} s; the upload limit is {max_audio_s:g} s",
                code="audio_too_long", status=413, hint="send a shorter clip or stream it over /v1/stream",
            )
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ServiceError(f"cannot decode the upload as audio: {e}", code="bad_audio", status=415,
                           hint="send WAV, FLAC or OGG/Vorbis audio") from e
    mono = to_mono(samples)
    if mono.size == 0 or not np.isfinite(mono).all():
        raise ServiceError("the audio is empty or holds NaN/Inf samples", code="bad_audio", status=422,
                           hint="repair or re-encode the file")
    audio = resample(mono, int(rate), 16000)
    if audio.shape[0] < 400:
        raise ServiceError(f"{audio.shape[0]} samples at 16 kHz is shorter than one frame (400 samples)",
                           code="bad_audio", status=422, hint="send at least 25 ms of audio")
    return audio


def _encode_features(feats: Any, fmt: str, model: Any) -> bytes:
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats.frames, dtype=np.float32), allow_pickle=False)
        return buf.getvalue()
    # Same record as `ostinato features --out X.msgpack` (docs/service.md).
    record = {
        "version": 1,
        "output": feats.output,
        "sample_rate": feats.sample_rate,
        "frame_stride_samples": model.frame_stride_samples,
        "start_samples": feats.start_samples.tolist(),
        "shape": list(feats.frames.shape),
        "dtype": "float32",
        "frames": feats.frames.astype("<f4").tobytes(),
        "model": model.manifest.label,
        "random_init": bool(model.manifest.random_init),
    }
    return msgpack.packb(record, use_bin_type=True)  # type: ignore[no-any-return]
