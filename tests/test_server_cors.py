"""CORS on a real server: `ostinato serve --cors-origin` (subprocess), preflight before auth,
headers on REST answers and errors, the WebSocket Origin check, same-origin-only by default."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from server_harness import running_server

from ostinato.stream.wire import Hello, Ready, decode_frame, encode_frame

TOKEN = "a-long-enough-token-123456"
SITE = "https://dash.example.org"


async def test_cors_origin_gets_preflight_and_headers_others_do_not(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir, token=TOKEN, cors_origins=frozenset({SITE})) as server, \
            aiohttp.ClientSession() as http:
        preflight = {"Origin": SITE, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"}
        async with http.options(server.url + "/v1/models", headers=preflight) as r:  # no token: preflights never carry it
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == SITE
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"] and "Origin" in r.headers["Vary"]
        auth = {"Authorization": f"Bearer {TOKEN}", "Origin": SITE}
        async with http.get(server.url + "/v1/models", headers=auth) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == SITE
        async with http.get(server.url + "/v1/models/nope", headers=auth) as r:  # errors are readable too
            assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == SITE
        async with http.get(server.url + "/v1/models", headers={"Origin": SITE}) as r:  # CORS is not auth
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == SITE
        other = {**preflight, "Origin": "https://evil.example"}
        async with http.options(server.url + "/v1/models", headers=other) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        async with http.get(server.url + "/v1/models", headers={**auth, "Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        ws = await http.ws_connect(server.ws_url, headers=auth)  # the WebSocket admits the CORS origin
        await ws.send_bytes(encode_frame(Hello(sample_rate=16000)))
        assert isinstance(decode_frame((await ws.receive(timeout=5)).data), Ready)
        await ws.close()
        try:
            await http.ws_connect(server.ws_url, headers={**auth, "Origin": "https://evil.example"})
            raise AssertionError("cross-site WebSocket accepted")
        except aiohttp.WSServerHandshakeError as e:
            assert e.status == 403


async def test_serve_cli_flag_and_same_origin_default(tiny_w2v_dir: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ostinato", "serve", "--model", str(tiny_w2v_dir), "--provider", "cpu", "--port", "0",
        "--cors-origin", SITE, "--cors-origin", "http://localhost:3000", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(120):
            line = ""
            while "ostinato serving" not in line:
                line = (await proc.stdout.readline()).decode()
                assert line, "server exited"
        url = line.split()[2]
        async with aiohttp.ClientSession() as http:
            for origin in (SITE, "http://localhost:3000"):
                async with http.options(url + "/v1/models", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}) as r:
                    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == origin
            async with http.get(url + "/healthz", headers={"Origin": "http://localhost:3001"}) as r:
                assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    finally:
        proc.terminate()
        assert await proc.wait() == 0  # graceful


async def test_no_cors_by_default(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        async with http.options(server.url + "/v1/models", headers={"Origin": SITE, "Access-Control-Request-Method": "GET"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        async with http.get(server.url + "/v1/models", headers={"Origin": SITE}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
