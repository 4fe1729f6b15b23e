"""REST side of the service on a real loopback server: health, readiness, metrics, OpenAPI,
model lifecycle with validated configs, and the features upload with its limits."""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
import msgpack
import numpy as np
import pytest
from server_harness import planted_repeats, running_server, write_wav

from ostinato.runtime import Wav2Vec2Model


async def test_health_ready_metrics(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with http.get(server.url + "/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["ready"] is True
            assert body["models"]["tiny"] == {"state": "loaded", "provider": "CPUExecutionProvider", "provider_fell_back": False}
        async with http.get(server.url + "/metrics") as r:
            text = await r.text()
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        assert 'ostinato_server_http_requests_total{route="/readyz",status="200"} 1.0' in text
        assert "ostinato_process_resident_memory_bytes" in text
        async with http.get(server.url + "/nope") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


async def test_readyz_503_names_the_reason_when_the_model_is_unloaded(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/models/tiny/unload") as r:
            assert r.status == 200 and (await r.json())["state"] == "unloaded"
        async with http.get(server.url + "/readyz") as r:
            body = await r.json()
            assert r.status == 503 and body["ready"] is False
            assert body["reasons"] == ["default model 'tiny' is unloaded"]
        async with http.post(server.url + "/v1/models/tiny/load") as r:
            assert r.status == 200 and (await r.json())["state"] == "loaded"
        async with http.get(server.url + "/readyz") as r:
            assert r.status == 200


async def test_openapi_describes_exactly_the_routes(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/v1/openapi.json") as r:
            doc = await r.json()
        routes = {res.canonical for res in server.runner.app.router.resources()} - {"/static"}
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == routes
    streaming = doc["components"]["schemas"]["StreamingConfig"]["properties"]
    assert streaming["chunk_samples"]["default"] == 1600 and streaming["batch_size"]["default"] == 4
    assert streaming["overlap_samples"]["default"] == 400 and streaming["max_queue"]["default"] == 10


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"model_dir": "X"}, "name", "required"),
        ({"name": "bad name!", "model_dir": "X"}, "name", "expected"),
        ({"name": "m", "model_dir": "/nonexistent"}, "model_dir", "ostinato.json"),
        ({"name": "m", "path": 7}, "path", "expected string"),
        ({"name": "m", "model_dir": "D", "path": "D"}, "model_dir", "exactly one"),
        ({"name": "m", "model_dir": "D", "provider": "gpu"}, "provider", "auto"),
        ({"name": "m", "model_dir": "D", "parameters": {"hiddenDropout": 1.0}}, "parameters.hiddenDropout", "[0, 1)"),
        ({"name": "m", "model_dir": "D", "parameters": {"attentionDropout": "0.1"}}, "parameters.attentionDropout", "expected"),
        ({"name": "m", "model_dir": "D", "parameters": {"dropoutz": 0.1}}, "parameters.dropoutz", "unknown"),
        ({"name": "m", "model_dir": "D", "streaming": {"batch_size": 0}}, "streaming.batch_size", "1..256"),
        ({"name": "m", "model_dir": "D", "streaming": {"overlap_samples": 333}}, "streaming.overlap_samples", "80 +"),
        ({"name": "m", "model_dir": "D", "streaming": {"max_queue": True}}, "streaming.max_queue", "expected"),
        ({"name": "m", "model_dir": "D", "colour": "red"}, "colour", "unknown field"),
        ([1, 2], "(body)", "JSON object"),
    ],
)
async def test_bad_model_config_is_422_naming_the_field(tiny_w2v_dir: Path, body: object, field: str, words: str) -> None:
    if isinstance(body, dict):
        body = {k: (str(tiny_w2v_dir) if v == "D" else v) for k, v in body.items()}
    async with running_server(None) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/models", json=body) as r:
            err = (await r.json())["error"]
        assert r.status == 422, err
        assert err["code"] == "invalid_config" and err["field"] == field and err["error_class"] == "input"
        assert words in err["message"] and err["hint"]


async def test_model_lifecycle_initialize_load_unload_dispose(tiny_w2v_dir: Path) -> None:
    config = {"name": "wav2vec2-base", "version": "2.0.0", "path": str(tiny_w2v_dir), "provider": "cpu",
              "parameters": {"attentionDropout": 0.1, "hiddenDropout": 0.1},
              "streaming": {"chunk_samples": 1600, "overlap_samples": 400, "max_queue": 10, "batch_size": 4}}
    async with running_server(None) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/readyz") as r:
            assert r.status == 503 and "no model configured" in (await r.json())["reasons"][0]
        async with http.post(server.url + "/v1/models?load=false", json=config) as r:
            assert r.status == 201 and (await r.json())["state"] == "initialized"
        async with http.post(server.url + "/v1/models", json=config) as r:
            assert r.status == 409 and (await r.json())["error"]["code"] == "model_busy"
        async with http.post(server.url + "/v1/models/wav2vec2-base/load") as r:
            info = await r.json()
            assert info["state"] == "loaded" and info["random_weights"] is True
            assert info["providers"] == ["CPUExecutionProvider"] and "last_hidden_state" in info["outputs"]
            assert info["config"]["parameters"] == {"attentionDropout": 0.1, "hiddenDropout": 0.1}
        async with http.get(server.url + "/readyz") as r:
            assert r.status == 200
        async with http.post(server.url + "/v1/models/wav2vec2-base/unload") as r:
            assert (await r.json())["state"] == "unloaded"
        async with http.delete(server.url + "/v1/models/wav2vec2-base") as r:
            assert r.status == 204
        async with http.get(server.url + "/v1/models/wav2vec2-base") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "model_unavailable"
        async with http.get(server.url + "/v1/models") as r:
            assert (await r.json()) == {"default": None, "models": []}


async def test_features_upload_matches_offline_features(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    audio, _ = planted_repeats()
    wav = write_wav(tmp_path / "clip.wav", audio[: 3 * 16000])
    with Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu") as model:
        expected = model.features(np.asarray(__import__("soundfile").read(wav, dtype="float32")[0]), 16000)
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/features", data=wav.read_bytes(), headers={"Content-Type": "audio/wav"}) as r:
            assert r.status == 200 and r.content_type == "application/msgpack"
            record = msgpack.unpackb(await r.read())
        frames = np.frombuffer(record["frames"], "<f4").reshape(record["shape"])
        assert record["output"] == "last_hidden_state" and record["random_init"] is True
        assert record["start_samples"] == expected.start_samples.tolist()
        np.testing.assert_allclose(frames, expected.frames, atol=1e-5)
        form = aiohttp.FormData()
        form.add_field("file", wav.read_bytes(), filename="clip.wav", content_type="audio/wav")
        async with http.post(server.url + "/v1/features?format=npy&output=hidden_state_1", data=form) as r:
            assert r.status == 200 and r.headers["X-Ostinato-Frames"] == str(len(expected))
            arr = np.load(io.BytesIO(await r.read()))
        assert arr.shape[0] == len(expected) and arr.dtype == np.float32


async def test_features_upload_limits_and_bad_audio(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "long.wav", np.zeros(16000 * 3, np.float32))
    async with running_server(tiny_w2v_dir, limits_max_upload_bytes=50_000, limits_max_upload_audio_s=1.0) as server, \
            aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/features", data=b"\0" * 60_000) as r:
            err = (await r.json())["error"]
            assert r.status == 413 and err["code"] == "upload_too_large" and "50000" in err["message"]

        async def chunks():  # no Content-Length: the limit applies while reading
            for _ in range(10):
                yield b"\0" * 10_000

        async with http.post(server.url + "/v1/features", data=chunks()) as r:
            assert r.status == 413
        async with http.post(server.url + "/v1/features", data=wav.read_bytes()[:40_000]) as r:
            err = (await r.json())["error"]
            assert r.status == 413 and err["code"] == "audio_too_long"
        async with http.post(server.url + "/v1/features", data=b"RIFF not really a wav file") as r:
            err = (await r.json())["error"]
            assert r.status == 415 and err["code"] == "bad_audio" and "Traceback" not in err["message"]
        async with http.post(server.url + "/v1/features?format=xml", data=b"x") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_format"
        async with http.get(server.url + "/healthz") as r:
            assert r.status == 200
