"""Descriptions in the service: streams describe their new patterns (``describe`` event frame,
library metadata, metrics), ``POST /v1/patterns/{id}/describe`` re-describes a stored pattern
from its clip, and the error answers (no model, no clip, unknown pattern, bad prompt)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import numpy as np
from server_harness import planted_repeats, running_server

from ostinato.client import ClientConfig, StreamClient
from ostinato.stream.events import event_from_json


async def _describe_event(client: StreamClient, timeout_s: float = 120.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in client.events() if e["event"] == "describe"]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no describe event; events: {client.events()}")


async def test_stream_patterns_are_described_and_can_be_described_again(tiny_gama_dir: Path, tmp_path: Path) -> None:
    audio, repeats = planted_repeats()
    db = tmp_path / "patterns.db"
    async with running_server(None, library_path=db, describe_model=tiny_gama_dir,
                              describe_prompt="Describe the audio.") as server, aiohttp.ClientSession() as http:
        async with StreamClient(server.ws_url, config=ClientConfig(max_retries=0)) as client:
            await client.send_audio(audio)
            await client.flush()
            session = server.service.streams.sessions[client.stream_id]
            event = await _describe_event(client)  # arrives while the stream is still open
            await client.end()
        # the late event went through the stream's numbered output (no seq gap, counted in bye)
        assert client.output_gaps == 0 and session.events_out == len(client.events())
        after_bye = session.outbox.next_seq
        assert not session.publish_late([event_from_json(json.dumps(event))]) and session.outbox.next_seq == after_bye
        match = next(e for e in client.events() if e["event"] == "match")
        pid = match["pattern_id"]
        assert event["pattern_id"] == pid and event["stream"] == client.stream_id and event["occurrence"] == "first"
        assert event["random_weights"] is True and event["model"] == "tiny-fp32" and isinstance(event["text"], str)
        assert event["clip_start_s"] == 0.0 and event["clip_end_s"] > repeats[0][1]  # centred on 3-5 s, clipped at 0

        async with http.get(server.url + f"/v1/patterns/{pid}") as r:
            stored = (await r.json())["metadata"]["description"]
        assert stored["text"] == event["text"] and stored["clip"]["occurrence"] == "first"

        async with http.post(server.url + f"/v1/patterns/{pid}/describe", json={"prompt": "Where was this recorded?"}) as r:
            body = await r.json()
        assert r.status == 200, body
        again = body["description"]
        assert again["pattern_id"] == pid and again["prompt"] == "Where was this recorded?" and isinstance(again["text"], str)
        assert again["clip_start_s"] == 0.0 and again["stream"] == client.stream_id
        async with http.get(server.url + f"/v1/patterns/{pid}") as r:
            assert (await r.json())["metadata"]["description"]["prompt"] == "Where was this recorded?"
        async with http.post(server.url + f"/v1/patterns/{pid}/describe?wait=false") as r:
            assert r.status == 202 and (await r.json())["status"] == "queued"

        async with http.post(server.url + "/v1/patterns/pat-nope/describe") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "pattern_not_found"
        async with http.post(server.url + f"/v1/patterns/{pid}/describe", json={"prompt": ""}) as r:
            assert r.status == 400 and "prompt" in (await r.json())["error"]["message"]
        async with http.get(server.url + "/metrics") as r:
            metrics = await r.text()
        assert "ostinato_describe_jobs_completed_total" in metrics and "ostinato_describe_latency_seconds_count" in metrics
        assert 'ostinato_describe_jobs_dropped_total{reason="queue_full"} 0.0' in metrics
        submitted = server.service.metrics.value("ostinato_describe_jobs_submitted_total")
        assert submitted == 3 and server.service.metrics.value("ostinato_describe_jobs_completed_total") >= 2


async def test_describe_needs_a_model_and_a_clip(tiny_gama_dir: Path, tmp_path: Path) -> None:
    from ostinato.stream.library import PatternLibrary

    db = tmp_path / "patterns.db"
    with PatternLibrary(db) as lib:  # a pattern filed without describing: no clip
        pid = lib.add_pattern(np.ones(156, np.float32), "logmel/d39", 2.0)
    async with running_server(None, library_path=db) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + f"/v1/patterns/{pid}/describe") as r:
            err = (await r.json())["error"]
        assert r.status == 503 and err["code"] == "describe_unavailable" and "--describe-model" in err["hint"]
    async with running_server(None, library_path=db, describe_model=tiny_gama_dir) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + f"/v1/patterns/{pid}/describe") as r:
            err = (await r.json())["error"]
        assert r.status == 409 and err["code"] == "no_clip" and "--describe-model" in err["hint"]
    async with running_server(None, describe_model=tiny_gama_dir) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + f"/v1/patterns/{pid}/describe") as r:
            err = (await r.json())["error"]
        assert r.status == 404 and err["code"] == "library_unavailable"
