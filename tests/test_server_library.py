"""The pattern library behind the service: live matches are filed, and ``/v1/patterns…``
lists, shows, relates and queries them by example."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from server_harness import melody, planted_repeats, running_server, write_wav

from ostinato.client import ClientConfig, StreamClient


async def test_live_matches_are_filed_and_queryable(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    audio, repeats = planted_repeats()
    db = tmp_path / "patterns.db"
    async with running_server(tiny_w2v_dir, library_path=db) as server, aiohttp.ClientSession() as http:
        async with StreamClient(server.ws_url, config=ClientConfig(max_retries=0)) as client:
            await client.send_audio(audio)
            await client.end()
        match = next(e for e in client.events() if e["event"] == "match" and abs(e["start_s"] - repeats[1][0]) < 0.5)
        pid = match["pattern_id"]
        assert pid.startswith("pat-")  # the event carries the library id

        async with http.get(server.url + "/v1/patterns") as r:
            listing = await r.json()
        assert r.status == 200 and pid in [p["id"] for p in listing["patterns"]] and listing["total"] >= 1
        async with http.get(server.url + f"/v1/patterns?stream={client.stream_id}&limit=5") as r:
            assert pid in [p["id"] for p in (await r.json())["patterns"]]
        async with http.get(server.url + f"/v1/patterns/{pid}") as r:
            detail = await r.json()
        spans = sorted((o["start_s"], o["end_s"]) for o in detail["occurrences"])
        assert detail["occurrence_count"] >= 2 and detail["feature"].startswith("logmel/")
        assert abs(spans[0][0] - repeats[0][0]) < 0.5 and any(abs(s - repeats[1][0]) < 0.5 for s, _ in spans)
        async with http.get(server.url + f"/v1/patterns/{pid}/similar?k=3") as r:
            assert r.status == 200 and all(p["id"] != pid for p in (await r.json())["patterns"])

        # query by example: the motif alone finds its pattern first
        clip = write_wav(tmp_path / "motif.wav", melody(1, 2.0))
        async with http.post(server.url + "/v1/patterns/query?k=3", data=clip.read_bytes()) as r:
            found = await r.json()
        assert r.status == 200 and found["patterns"][0]["id"] == pid and found["patterns"][0]["similarity"] > 0.8

        async with http.get(server.url + "/v1/patterns/pat-nope") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "pattern_not_found"
        async with http.get(server.url + "/v1/patterns?limit=0") as r:
            assert r.status == 400 and "limit" in (await r.json())["error"]["message"]
        async with http.post(server.url + "/v1/patterns/query", data=b"not audio") as r:
            assert r.status == 415
    # committed on shutdown: a fresh reader sees the pattern
    from ostinato.stream.library import PatternLibrary

    with PatternLibrary(db, readonly=True) as library:
        assert library.get(pid).occurrence_count >= 2


async def test_no_library_is_a_clear_404(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/v1/patterns") as r:
            err = (await r.json())["error"]
        assert r.status == 404 and err["code"] == "library_unavailable" and "--library" in err["hint"]


async def test_match_min_evidence_reaches_each_streams_matcher(tiny_w2v_dir: Path) -> None:
    audio, _ = planted_repeats()  # the repeats the test above finds with the default evidence
    async with running_server(tiny_w2v_dir, match_min_evidence=10.0) as server:
        async with StreamClient(server.ws_url, config=ClientConfig(max_retries=0)) as client:
            await client.send_audio(audio)
            await client.end()
    assert [e for e in client.events() if e["event"] == "match"] == []  # no repeat carries evidence 10


def test_serve_refuses_a_bad_option_with_a_hint(tiny_w2v_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ostinato.__main__ import main

    assert main(["serve", "--model", str(tiny_w2v_dir), "--match-min-evidence", "0"]) == 2
    err = capsys.readouterr().err
    assert "match_min_evidence=0.0" in err and "hint:" in err
    assert main(["serve", "--model", str(tiny_w2v_dir), "--match-buffer-s", "5"]) == 2  # was a traceback
    assert "match_buffer_s=5.0" in capsys.readouterr().err
