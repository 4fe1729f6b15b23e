"""Hostile and broken peers: auth, Origin, limits, malformed frames, slow clients.

Every bad input must get an ``error`` frame (or an HTTP 4xx) with a clear message, close the
stream only when it cannot continue, leave other streams alone and never leak a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

import aiohttp
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_harness import running_server

from ostinato.auth import origin_allowed, token_matches
from ostinato.stream.errors import ProtocolError
from ostinato.stream.wire import Audio, ErrorFrame, Frame, Hello, Ready, Status, WireLimits, decode_frame, encode_frame, encode_pcm

TOKEN = "s3cret-token-for-tests-0123456789"


async def _recv(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 5) -> Frame:
    msg = await ws.receive(timeout=timeout_s)
    assert msg.type is aiohttp.WSMsgType.BINARY, (msg.type, msg.data, ws.close_code)
    return decode_frame(msg.data)


async def _error(ws: aiohttp.ClientWebSocketResponse) -> ErrorFrame:
    frame = await _recv(ws)
    assert isinstance(frame, ErrorFrame), frame
    assert "Traceback" not in frame.message and 'File "' not in frame.message
    return frame


def _raw(**body: object) -> bytes:
    return msgpack.packb({"v": 1, **body}, use_bin_type=True)


async def _hello(ws: aiohttp.ClientWebSocketResponse, **kw: object) -> Ready:
    await ws.send_bytes(encode_frame(Hello(**{"sample_rate": 16000, "outputs": ("status",), **kw})))  # type: ignore[arg-type]
    ready = await _recv(ws)
    assert isinstance(ready, Ready), ready
    return ready


# -- auth and origin -----------------------------------------------------------------------------


def test_token_and_origin_rules() -> None:
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN[:-1] + "x", TOKEN) and not token_matches(None, TOKEN)
    assert not token_matches("", TOKEN) and not token_matches("é" * 40, TOKEN)
    assert origin_allowed(None, "h:1") and origin_allowed("http://h:1", "h:1") and origin_allowed("https://H:1", "h:1")
    assert not origin_allowed("http://evil.example", "h:1") and not origin_allowed("null", "h:1")
    assert origin_allowed("http://dash.example", "h:1", frozenset({"http://dash.example"}))


async def test_bearer_token_guards_everything_but_healthz(tiny_w2v_dir: Path) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # accept cookies from 127.0.0.1, as browsers do
    async with running_server(tiny_w2v_dir, token=TOKEN) as server, aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(server.url + "/healthz") as r:
            assert r.status == 200
        for path in ("/readyz", "/metrics", "/v1/models", "/v1/openapi.json", "/", "/static/app.js"):
            async with http.get(server.url + path) as r:
                err = (await r.json())["error"]
                assert r.status == 401 and err["code"] == "unauthorized" and "Bearer" in err["hint"], path
        async with http.get(server.url + "/readyz", headers={"Authorization": "Bearer wrong-token-wrong-token"}) as r:
            assert r.status == 401
        async with http.get(server.url + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.ws_url)
        assert refused.value.status == 401
        ws = await http.ws_connect(server.ws_url, headers={"Authorization": f"Bearer {TOKEN}"})
        await _hello(ws)
        await ws.close()
        # the dashboard: /?token=… sets an HttpOnly cookie and drops the token from the URL
        async with http.get(server.url + f"/?token={TOKEN}", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with http.get(server.url + "/") as r:  # the session now carries the cookie
            assert r.status == 200 and "ostinato" in await r.text()


async def test_browser_origin_check(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        host = server.url.removeprefix("http://")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.ws_url, headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403
        ws = await http.ws_connect(server.ws_url, headers={"Origin": f"http://{host}"})
        await _hello(ws)
        await ws.close()
        # state-changing REST from a foreign page is refused too (CSRF)
        async with http.post(server.url + "/v1/models/tiny/unload", headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "origin_forbidden"
        async with http.get(server.url + "/readyz") as r:
            assert r.status == 200


# -- malformed frames ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (b"\xc1\xc1\xc1", "protocol_error", "malformed msgpack"),
        (_raw(type="warp", x=1), "protocol_error", "unknown frame type"),
        (_raw(type="hello", sample_rate=16000) .replace(b"\xa1v\x01", b"\xa1v\x07"), "protocol_error", "protocol version"),
        (msgpack.packb([1, 2, 3]), "protocol_error", "expected a map"),
        (_raw(type="audio", seq=0, pcm=b"\0\0"), "hello_required", "before hello"),
        (_raw(type="hello", sample_rate=3), "protocol_error", "sample_rate"),
        (_raw(type="hello", sample_rate=16000, encoding="mp3"), "protocol_error", "encoding"),
        (_raw(type="hello", sample_rate=16000, options={"overflow": "explode"}), "protocol_error", "overflow"),
        (_raw(type="hello", sample_rate=16000, role="receive"), "protocol_error", "needs a server media file"),
        (_raw(type="ready", stream_id="x"), "hello_required", "before hello"),
    ],
)
async def test_bad_frames_before_hello_get_errors_and_the_stream_can_still_open(
    tiny_w2v_dir: Path, message: bytes, code: str, words: str
) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        await ws.send_bytes(message)
        err = await _error(ws)
        assert err.code == code and words in err.message and not err.fatal and err.error_class == "input", err
        await _hello(ws)  # the connection survived


async def test_bad_audio_after_hello_is_refused_and_the_stream_goes_on(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir, limits_max_audio_s_per_message=0.5) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        await _hello(ws, encoding="s16le", options={"status_interval_s": 60})
        cases = [
            (Audio(seq=0, pcm=b"\x01\x02\x03"), "bad_audio", "whole number"),
            (Audio(seq=0, pcm=encode_pcm(np.zeros(16000, np.float32), "s16le")), "bad_audio", "limit is 0.5 s"),
            (Hello(sample_rate=44100, encoding="s16le"), "sample_rate_changed", "44100"),
            (Hello(sample_rate=16000, encoding="s16le"), "duplicate_hello", "second hello"),
            (Status(), "unexpected_frame", "sent by the server"),
        ]
        for frame, code, words in cases:
            await ws.send_bytes(encode_frame(frame))
            err = await _error(ws)
            assert err.code == code and words in err.message and not err.fatal, err
        nan = Audio(seq=0, pcm=struct.pack("<4f", 0.0, float("nan"), float("inf"), 0.0))
        ws_f32 = await http.ws_connect(server.ws_url)
        await _hello(ws_f32, options={"status_interval_s": 60})
        await ws_f32.send_bytes(encode_frame(nan))
        err = await _error(ws_f32)
        assert err.code == "bad_audio" and "NaN or Inf" in err.message
        # good audio still flows on both streams
        await ws.send_bytes(encode_frame(Audio(seq=1, pcm=encode_pcm(np.zeros(3200, np.float32), "s16le"))))
        await ws.send_bytes(msgpack.packb({"v": 1, "type": "flush"}))
        status = await _recv(ws)
        assert isinstance(status, Status) and status.audio_s > 0 and status.dropped.get("seq_gap") == 1


async def test_oversized_messages_soft_and_hard_limits(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir, limits_max_message_bytes=10_000, limits_hard_message_bytes=50_000) as server, \
            aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        await _hello(ws)
        await ws.send_bytes(encode_frame(Audio(seq=0, pcm=b"\0" * 20_000), WireLimits(max_message_bytes=10**6)))
        err = await _error(ws)
        assert err.code == "message_too_large" and "limit is 10000" in err.message and not err.fatal
        await ws.send_bytes(b"\0" * 60_000)  # beyond what the reader buffers: an error frame, then closed with 1009
        err = await _error(ws)
        assert err.code == "message_too_large" and err.fatal and err.error_class == "input"
        assert "50000 bytes" in err.hint and "split audio" in err.hint
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1009
        registry = server.service.metrics.registry
        assert registry.get_sample_value("ostinato_server_rejected_total", {"reason": "message_too_large"}) == 2


async def test_message_above_the_default_hard_limit_gets_an_error_frame_before_1009(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url, max_msg_size=0)
        await _hello(ws)
        with contextlib.suppress(ConnectionError):  # the server may close while we are still sending
            await ws.send_bytes(b"\0" * (5 * 1024 * 1024))  # 5 MiB > the 4 MiB hard limit
        err = await _error(ws)
        assert err.code == "message_too_large" and err.fatal and str(4 * 1024 * 1024) in err.hint
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009  # (our close reply may find the socket gone)
        await _hello(await http.ws_connect(server.ws_url))  # the server goes on serving


async def test_rate_limit_pauses_reading_without_losing_audio(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir, limits_max_messages_per_s=100, limits_message_burst=10) as server, \
            aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        await _hello(ws, options={"status_interval_s": 60})
        loop = asyncio.get_running_loop()
        started = loop.time()
        for seq in range(60):
            await ws.send_bytes(encode_frame(Audio(seq=seq, pcm=encode_pcm(np.zeros(160, np.float32), "f32le"))))
        await ws.send_bytes(msgpack.packb({"v": 1, "type": "flush"}))
        err = await _error(ws)
        assert err.code == "rate_limited" and err.error_class == "transient" and not err.fatal
        status = await _recv(ws, timeout_s=10)
        elapsed_s = loop.time() - started
    assert isinstance(status, Status) and status.audio_s == 0.6 and status.dropped == {}
    assert elapsed_s >= 0.4  # 61 messages at 100/s after a burst of 10


async def test_slow_and_silent_clients_are_cut_off(tiny_w2v_dir: Path) -> None:
    async with running_server(tiny_w2v_dir, limits_hello_timeout_s=0.5, limits_idle_timeout_s=0.7,
                              limits_header_timeout_s=1.0) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)  # never says hello
        err = await _error(ws)
        assert err.code == "hello_timeout" and err.fatal
        assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
        ws = await http.ws_connect(server.ws_url)
        await _hello(ws)  # then goes silent
        frames = [decode_frame(m.data) async for m in ws]
        assert frames[-1].type == "bye" and frames[-1].reason == "idle"  # type: ignore[union-attr]
        # slowloris: headers dribbled byte by byte never complete; the server hangs up
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        closed = False
        for _ in range(40):
            try:
                writer.write(b"X")
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if reader.at_eof() or await _eof_within(reader, 0.1):
                closed = True
                break
        writer.close()
        assert closed
        async with http.get(server.url + "/healthz") as r:
            assert r.status == 200


async def _eof_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1024), timeout_s)
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_garbage_alone_ends_the_connection_after_many_errors(tiny_w2v_dir: Path) -> None:
    from ostinato.server_stream import MAX_CONSECUTIVE_ERRORS

    async with running_server(tiny_w2v_dir) as server, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        for _ in range(MAX_CONSECUTIVE_ERRORS):
            await ws.send_bytes(b"\xc1")
        errors = [await _error(ws) for _ in range(MAX_CONSECUTIVE_ERRORS)]
        assert not any(e.fatal for e in errors[:-1]) and errors[-1].fatal
        assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        async with http.get(server.url + "/readyz") as r:
            assert r.status == 200


_INTS = st.integers(-(2**63), 2**64 - 1)
_VALUES = st.none() | st.booleans() | _INTS | st.text(max_size=8) | st.binary(max_size=8) | st.floats() | st.lists(_INTS, max_size=3)
_FIELDS = st.sampled_from(["v", "type", "seq", "pcm", "sample_rate", "encoding", "channels", "options", "outputs",
                           "stream_id", "start_sample", "event", "data", "num_frames", "dim", "dtype", "dropped"])
_TYPES = st.sampled_from(["hello", "audio", "flush", "end", "ready", "event", "features", "status", "error", "bye"])
_MESSAGES = (
    st.binary(max_size=512)
    | st.builds(lambda d: msgpack.packb(d, use_bin_type=True), st.dictionaries(_FIELDS, _VALUES, max_size=8))
    | st.builds(lambda t, d: msgpack.packb({**d, "v": 1, "type": t}, use_bin_type=True), _TYPES,
                st.dictionaries(_FIELDS, _VALUES | st.dictionaries(st.text(max_size=4), _VALUES, max_size=3), max_size=8))
    | st.recursive(_VALUES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                   max_leaves=40).map(lambda d: msgpack.packb(d, use_bin_type=True))
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSAGES)
def test_fuzz_decoder_only_ever_raises_protocol_error(data: bytes) -> None:
    try:
        decode_frame(data, WireLimits(max_message_bytes=1024, max_depth=4))
    except ProtocolError as e:
        assert e.error_class == "input" and str(e)


async def test_fuzzed_messages_never_break_the_server(tiny_w2v_dir: Path) -> None:
    rng = np.random.default_rng(7)
    async with running_server(tiny_w2v_dir, limits_max_messages_per_s=10_000, limits_message_burst=10_000) as server, \
            aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        await _hello(ws, options={"status_interval_s": 60})
        good = encode_frame(Audio(seq=0, pcm=encode_pcm(np.zeros(1600, np.float32), "f32le")))
        sent_errors = 0
        for i in range(40):
            blob = bytearray(good)
            for _ in range(int(rng.integers(1, 6))):  # flip random bytes of a valid frame
                blob[int(rng.integers(0, len(blob)))] = int(rng.integers(0, 256))
            await ws.send_bytes(bytes(blob))
            sent_errors += 1
            if i % 10 == 0:
                await ws.send_bytes(good)
        await ws.send_bytes(msgpack.packb({"v": 1, "type": "flush"}))
        frames: list[Frame] = []
        while not frames or not isinstance(frames[-1], Status):
            frames.append(await _recv(ws))
        for f in frames:
            if isinstance(f, ErrorFrame):
                assert not f.fatal and "Traceback" not in f.message
        async with http.get(server.url + "/readyz") as r:
            assert r.status == 200
