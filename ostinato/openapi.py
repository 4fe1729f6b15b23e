"""OpenAPI 3.1 description of the service's REST API (served at ``GET /v1/openapi.json``).

The model-config schemas are generated from :class:`~ostinato.models.StreamingConfig`'s
fields and the validation constants, so the document cannot drift from what the server
accepts; a test checks that every route of the application is described and vice versa.
The WebSocket protocol is not REST: ``/v1/stream`` is listed with a pointer to
``docs/protocol.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ostinato import __version__
from ostinato.models import DROPOUT_PARAMETERS, PROVIDERS, StreamingConfig
from ostinato.stream.channel import OVERFLOW_POLICIES

__all__ = ["build_openapi"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return _json(_ref("Problem"), description)


_STREAMING_DOCS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "chunk_samples": ("integer", "New audio per window (hop), a multiple of 320 samples", {"minimum": 320, "multipleOf": 320}),
    "overlap_samples": ("integer", "Samples consecutive windows share: 80 + a multiple of 320", {"minimum": 80}),
    "max_queue": ("integer", "Capacity of each stream's audio and window queues", {"minimum": 1, "maximum": 10000}),
    "batch_size": ("integer", "Windows per inference call, across streams", {"minimum": 1, "maximum": 256}),
    "max_wait_ms": ("number", "Longest a window waits for its batch to fill", {"minimum": 0, "maximum": 10000}),
    "output": ("string", "Model output to stream (empty: the model's default)", {}),
    "overflow": ("string", "What a full stream queue does", {"enum": list(OVERFLOW_POLICIES)}),
    "max_lag_s": ("number", "Windows older than this are dropped (counted) instead of building lag", {"exclusiveMinimum": 0, "maximum": 3600}),
}


def _streaming_schema() -> dict[str, Any]:
    props: dict[str, Any] = {}
    for field in dataclasses.fields(StreamingConfig):
        kind, description, extra = _STREAMING_DOCS[field.name]
        props[field.name] = {"type": kind, "description": description, "default": field.default, **extra}
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": "Stream settings; the defaults are the seed configuration (1600/400, queue 10, batch 4)"}


def _model_config_schema() -> dict[str, Any]:
    dropout = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "description": "Give exactly one of model_dir or path (alias). Unknown fields are refused (422 names them).",
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "version": {"type": "string", "examples": ["2.0.0"]},
            "model_dir": {"type": "string", "description": "Directory written by `ostinato export` on the server"},
            "path": {"type": "string", "description": "Alias of model_dir"},
            "provider": {"type": "string", "enum": list(PROVIDERS), "default": "auto"},
            "intra_op_threads": {"type": "integer", "minimum": 0, "maximum": 256, "default": 0},
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "description": "Training-time dropout settings: validated in [0, 1), ignored at inference (dropout is off)",
                "properties": {name: dropout for name in DROPOUT_PARAMETERS},
            },
            "streaming": _ref("StreamingConfig"),
        },
        "examples": [{
            "name": "wav2vec2-base", "version": "2.0.0", "model_dir": "/models/base-int8", "provider": "auto",
            "parameters": {"attentionDropout": 0.1, "hiddenDropout": 0.1},
            "streaming": {"chunk_samples": 1600, "overlap_samples": 400, "max_queue": 10, "batch_size": 4},
        }],
    }


def _schemas() -> dict[str, Any]:
    problem_body = {
        "type": "object",
        "required": ["code", "message", "error_class", "hint"],
        "properties": {
            "code": {"type": "string", "examples": ["invalid_config", "model_unavailable", "upload_too_large"]},
            "message": {"type": "string"},
            "error_class": {"type": "string", "enum": ["input", "transient", "permanent"],
                            "description": "input: fix the request; transient: retry with backoff; permanent: give up"},
            "hint": {"type": "string", "description": "What to do about it"},
            "field": {"type": "string", "description": "Dotted path of the bad field (422 only)"},
        },
    }
    model_info = {
        "type": "object",
        "required": ["name", "state", "config", "streams"],
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string", "enum": ["initialized", "loading", "loaded", "unloaded", "failed"]},
            "config": _ref("ModelConfig"),
            "streams": {"type": "integer", "description": "Streams using the model now"},
            "error": {"type": "string"},
            "providers": {"type": "array", "items": {"type": "string"}},
            "provider_fell_back": {"type": "boolean"},
            "outputs": {"type": "array", "items": {"type": "string"}},
            "default_output": {"type": "string"},
            "sample_rate": {"type": "integer"},
            "frame_stride_samples": {"type": "integer"},
            "random_weights": {"type": "boolean", "description": "True for random-weight (untrained) exports"},
            "label": {"type": "string"},
            "loaded_at_s": {"type": "number"},
            "load_s": {"type": "number"},
        },
    }
    features_record = {
        "type": "object",
        "description": "msgpack map (application/msgpack); frames are little-endian float32 [shape[0], shape[1]]",
        "properties": {
            "version": {"type": "integer", "const": 1}, "output": {"type": "string"},
            "sample_rate": {"type": "integer"}, "frame_stride_samples": {"type": "integer"},
            "start_samples": {"type": "array", "items": {"type": "integer"}},
            "shape": {"type": "array", "items": {"type": "integer"}}, "dtype": {"const": "float32"},
            "frames": {"type": "string", "contentEncoding": "binary"}, "model": {"type": "string"},
            "random_init": {"type": "boolean"},
        },
    }
    pattern = {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": ["string", "null"]}, "feature": {"type": "string", "examples": ["logmel/d40"]},
        "duration_s": {"type": "number"}, "created_at": {"type": "number"}, "updated_at": {"type": "number"},
        "metadata": {"type": "object"}, "tags": {"type": "array", "items": {"type": "string"}},
        "occurrence_count": {"type": "integer"}, "first_seen": {"type": ["number", "null"]}, "last_seen": {"type": ["number", "null"]}}}
    return {
        "Problem": {"type": "object", "required": ["error"], "properties": {"error": problem_body}},
        "ModelConfig": _model_config_schema(),
        "StreamingConfig": _streaming_schema(),
        "ModelInfo": model_info,
        "ModelList": {"type": "object", "properties": {"default": {"type": ["string", "null"]},
                                                       "models": {"type": "array", "items": _ref("ModelInfo")}}},
        "Readiness": {"type": "object", "required": ["ready", "reasons"], "properties": {
            "ready": {"type": "boolean"}, "reasons": {"type": "array", "items": {"type": "string"}},
            "default_model": {"type": ["string", "null"]}, "models": {"type": "object"},
            "breakers": {"type": "object", "additionalProperties": {"enum": ["closed", "half_open", "open"]}},
            "health": {"type": "object"}, "streams": {"type": "integer"}, "max_streams": {"type": "integer"},
            "library": {"type": "boolean"}}},
        "FeaturesRecord": features_record,
        "Pattern": pattern,
        "ScoredPattern": {"allOf": [_ref("Pattern"), {"type": "object", "properties": {"similarity": {"type": "number"}}}]},
        "PatternDetail": {"allOf": [_ref("Pattern"), {"type": "object", "properties": {
            "occurrences": {"type": "array", "items": {"type": "object", "properties": {
                "stream": {"type": "string"}, "start_s": {"type": "number"}, "end_s": {"type": "number"},
                "score": {"type": "number"}, "recorded_at": {"type": "number"}}}},
            "relationships": {"type": "array", "items": {"type": "object", "properties": {
                "src": {"type": "string"}, "dst": {"type": "string"},
                "kind": {"enum": ["variant-of", "contains", "co-occurs-with"]}, "count": {"type": "integer"},
                "first_seen": {"type": "number"}, "last_seen": {"type": "number"}}}}}}]},
    }


def _paths() -> dict[str, Any]:
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    force_param = {"name": "force", "in": "query", "schema": {"type": "boolean", "default": False},
                   "description": "End the streams using the model instead of refusing with 409"}
    unauthorized = _problem("Missing or wrong bearer token")
    model_ok = _json(_ref("ModelInfo"), "The model")
    return {
        "/healthz": {"get": {"summary": "Liveness (no auth)", "security": [], "responses": {
            "200": _json({"type": "object", "properties": {"status": {"const": "ok"}, "uptime_s": {"type": "number"}}}, "Alive")}}},
        "/readyz": {"get": {"summary": "Readiness: model loaded, provider in use, breaker states", "responses": {
            "200": _json(_ref("Readiness"), "Ready"), "503": _json(_ref("Readiness"), "Not ready; reasons say why"),
            "401": unauthorized}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "responses": {
            "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": unauthorized}}},
        "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/v1/models": {
            "get": {"summary": "List models and their lifecycle state", "responses": {"200": _json(_ref("ModelList"), "Models")}},
            "post": {"summary": "Initialize and load a model", "parameters": [
                {"name": "load", "in": "query", "schema": {"type": "boolean", "default": True}, "description": "false: initialize only"},
                {"name": "replace", "in": "query", "schema": {"type": "boolean", "default": False}, "description": "Replace an unloaded model of that name"}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ModelConfig")}}},
                "responses": {"201": _json(_ref("ModelInfo"), "Created (and loaded)"),
                              "409": _problem("Name taken or too many models"),
                              "422": _problem("Invalid config; error.field names the field"),
                              "500": _problem("The model could not be loaded (error.hint says why)")}},
        },
        "/v1/models/{name}": {
            "parameters": [name_param],
            "get": {"summary": "One model", "responses": {"200": model_ok, "404": _problem("No such model")}},
            "delete": {"summary": "Unload and dispose a model", "parameters": [force_param], "responses": {
                "204": {"description": "Disposed"}, "404": _problem("No such model"), "409": _problem("Streams use it")}},
        },
        "/v1/models/{name}/load": {"parameters": [name_param], "post": {"summary": "Load a configured model", "responses": {
            "200": model_ok, "404": _problem("No such model"), "500": _problem("Load failed")}}},
        "/v1/models/{name}/unload": {"parameters": [name_param], "post": {"summary": "Release the session, keep the config",
            "parameters": [force_param], "responses": {"200": model_ok, "404": _problem("No such model"), "409": _problem("Streams use it")}}},
        "/v1/features": {"post": {
            "summary": "Frame features of an uploaded WAV/FLAC/OGG (size- and duration-limited)",
            "parameters": [
                {"name": "model", "in": "query", "schema": {"type": "string"}, "description": "Default: the default model"},
                {"name": "output", "in": "query", "schema": {"type": "string"}, "description": "Default: the model's default output"},
                {"name": "format", "in": "query", "schema": {"enum": ["msgpack", "npy"], "default": "msgpack"}}],
            "requestBody": {"required": True, "content": {
                "audio/wav": {"schema": {"type": "string", "contentEncoding": "binary"}},
                "audio/flac": {"schema": {"type": "string", "contentEncoding": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "contentEncoding": "binary"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "contentEncoding": "binary"}}}}}},
            "responses": {
                "200": {"description": "Features", "content": {"application/msgpack": {"schema": _ref("FeaturesRecord")},
                                                                "application/x-npy": {"schema": {"type": "string", "contentEncoding": "binary"}}}},
                "400": _problem("Bad format/output/upload"), "404": _problem("Model not loaded"),
                "408": _problem("Upload too slow"), "413": _problem("Upload too large or too long"),
                "415": _problem("Not decodable audio"), "422": _problem("Empty, too short or NaN/Inf audio")}}},
        "/v1/patterns": {"get": {"summary": "Pattern library: patterns, most recently updated first", "parameters": [
            {"name": "tag", "in": "query", "schema": {"type": "string"}},
            {"name": "stream", "in": "query", "schema": {"type": "string"}},
            {"name": "since", "in": "query", "schema": {"type": "number"}, "description": "Unix seconds (occurrence time)"},
            {"name": "until", "in": "query", "schema": {"type": "number"}, "description": "Unix seconds (occurrence time)"},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
            "responses": {"200": _json({"type": "object", "properties": {"total": {"type": "integer"},
                                                                         "patterns": {"type": "array", "items": _ref("Pattern")}}}, "Patterns"),
                          "404": _problem("The server has no library (--library)")}}},
        "/v1/patterns/query": {"post": {"summary": "Query by example: the top-k patterns most similar to an uploaded clip",
            "parameters": [{"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
                           {"name": "model", "in": "query", "schema": {"type": "string"}, "description": "For wav2vec2 libraries"}],
            "requestBody": {"required": True, "content": {"audio/wav": {"schema": {"type": "string", "contentEncoding": "binary"}}}},
            "responses": {"200": _json({"type": "object", "properties": {"feature": {"type": "string"},
                                        "patterns": {"type": "array", "items": _ref("ScoredPattern")}}}, "Similar patterns"),
                          "404": _problem("No library"), "413": _problem("Upload too large"), "422": _problem("Clip cannot be embedded")}}},
        "/v1/patterns/{id}": {"parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": "One pattern with occurrences and relationships", "responses": {
                "200": _json(_ref("PatternDetail"), "The pattern"), "404": _problem("No such pattern or no library")}}},
        "/v1/patterns/{id}/similar": {"parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": "Patterns most similar to this one", "parameters": [
                {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}}],
                "responses": {"200": _json({"type": "object", "properties": {"patterns": {"type": "array", "items": _ref("ScoredPattern")}}},
                                           "Similar patterns"), "404": _problem("No such pattern or no library")}}},
        "/v1/patterns/{id}/describe": {"parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "post": {"summary": "Describe the pattern in words from its stored clip (serve --describe-model; docs/gama.md)",
                "parameters": [{"name": "wait", "in": "query", "schema": {"type": "boolean", "default": True},
                                "description": "false: answer 202 once queued; the text lands in the pattern's metadata"}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "prompt": {"type": "string", "maxLength": 1000, "default": "Describe the audio."}}}}}},
                "responses": {"200": _json({"type": "object", "properties": {"pattern_id": {"type": "string"},
                                            "description": {"type": "object", "description": "The describe event (docs/events.md)"}}},
                                           "The description (also stored in the pattern's metadata)"),
                              "202": {"description": "Queued (wait=false)"}, "400": _problem("Bad prompt"),
                              "404": _problem("No such pattern or no library"), "409": _problem("The pattern has no stored clip"),
                              "500": _problem("The model failed on the clip (recorded in the metadata)"),
                              "503": _problem("No describe model, or the describe queue is full")}}},
        "/v1/media": {"get": {"summary": "Server-side audio files the dashboard may stream", "responses": {"200": {"description": "Files"}}}},
        "/v1/stream": {"get": {"summary": "WebSocket: the ostinato wire protocol (msgpack frames), see docs/protocol.md",
                               "responses": {"101": {"description": "Switching protocols"}, "403": _problem("Origin not allowed")}}},
        "/": {"get": {"summary": "Dashboard (HTML); /?token=… stores the token in a cookie", "responses": {"200": {"description": "HTML"}}}},
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API.

    Returns:
        A JSON-serializable dict.
    """
    return {
        "openapi": "3.1.0",
        "info": {"title": "ostinato service", "version": __version__,
                 "description": "Real-time audio features and recurring-pattern detection. Errors use the Problem body."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": _schemas()},
        "paths": _paths(),
    }
