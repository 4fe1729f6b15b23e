"""Wire protocol: round trips of every frame, PCM codecs, and refusal of malformed input."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ostinato.stream.errors import ErrorClass, InvalidAudioError, ProtocolError
from ostinato.stream.wire import (
    PROTOCOL_VERSION,
    Audio,
    Bye,
    End,
    ErrorFrame,
    Event,
    FeaturesFrame,
    Flush,
    Hello,
    Ready,
    Status,
    WireLimits,
    decode_frame,
    decode_pcm,
    encode_frame,
    encode_pcm,
)

FRAMES = [
    Hello(sample_rate=48000, encoding="s16le", channels=2, stream_id="mic-1", outputs=("events", "features")),
    Hello(sample_rate=16000, role="receive", resume_from_seq=7, options={"policy": "drop_oldest"}),
    Audio(seq=3, pcm=b"\x01\x00\x02\x00", start_sample=4800),
    Audio(seq=0, pcm=b""),
    Flush(),
    End(),
    Ready(stream_id="s", encoding="s16le", info={"window": {"hop_samples": 8000}}),
    Event(event={"event": "match", "stream": "s", "score": 0.93, "start_s": 1.5}),
    Status(lag_s=0.25, dropped={"deadline": 2}, health="degraded", reasons=("lag 1.2 s",), frames=50, audio_s=1.0),
    ErrorFrame(code="bad_audio", message="odd byte count", error_class="input", hint="send whole frames", fatal=False),
    Bye(reason="end", summary={"frames": 10}),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f.type)
def test_round_trip(frame: object) -> None:
    assert decode_frame(encode_frame(frame)) == frame  # type: ignore[arg-type]


def test_features_round_trip_f32_and_f16() -> None:
    x = np.random.default_rng(0).standard_normal((25, 8)).astype(np.float32)
    for dtype, tol in (("f32", 0.0), ("f16", 1e-2)):
        frame = FeaturesFrame.from_array("s", "last_hidden_state", 640, x, dtype=dtype)  # type: ignore[arg-type]
        back = decode_frame(encode_frame(frame))
        assert isinstance(back, FeaturesFrame) and back.start_sample == 640
        assert np.allclose(back.to_array(), x, atol=tol)


def _raw(**body: object) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, **body}, use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xc1", "malformed"),
        (msgpack.packb([1, 2]), "expected a map"),
        (msgpack.packb({"v": 99, "type": "end"}), "version"),
        (_raw(type="dance"), "unknown frame type"),
        (_raw(type="audio", pcm=b""), "seq"),
        (_raw(type="audio", seq="1", pcm=b""), "audio.seq"),
        (_raw(type="audio", seq=True, pcm=b""), "audio.seq"),
        (_raw(type="audio", seq=-1, pcm=b""), "expected >= 0"),
        (_raw(type="hello", sample_rate=16000, encoding="mp3"), "encoding"),
        (_raw(type="hello", sample_rate=5), "sample_rate"),
        (_raw(type="hello", sample_rate=16000, outputs=[1]), "outputs"),
        (_raw(type="features", stream_id="s", output="o", start_sample=0, num_frames=2, dim=2, data=b"\x00"), "data bytes"),
        (_raw(type="error", code="x", message="m", error_class="fatal"), "error_class"),
        (_raw(type="status", dropped={"a": "b"}), "dropped"),
        (_raw(type="event", event={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}), "depth"),
    ],
)
def test_malformed_frames_raise_protocol_error(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        decode_frame(data)
    assert info.value.error_class is ErrorClass.INPUT


def test_size_limits() -> None:
    limits = WireLimits(max_message_bytes=100)
    with pytest.raises(ProtocolError, match="limit"):
        decode_frame(b"\x00" * 101, limits)
    with pytest.raises(ProtocolError, match="limit"):
        encode_frame(Audio(seq=0, pcm=b"\x00" * 200), limits)
    with pytest.raises(ProtocolError, match="malformed"):
        decode_frame(_raw(type="event", event={"k": list(range(50))}), WireLimits(max_array_len=10))


def test_unknown_fields_are_ignored() -> None:
    assert decode_frame(_raw(type="end", future_field=1)) == End()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decoder_only_raises_protocol_error(data: bytes) -> None:
    try:
        decode_frame(data)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "type", "seq", "pcm", "sample_rate", "event", "dropped"]),
                       st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.binary(max_size=5), st.none(),
                                 st.lists(st.integers(-(2**63), 2**63), max_size=3), st.booleans()), max_size=6))
def test_fuzz_structured_maps(body: dict[str, object]) -> None:
    try:
        decode_frame(msgpack.packb(body, use_bin_type=True))
    except ProtocolError:
        pass


def test_pcm_codecs() -> None:
    x = np.array([[0.0, 0.5], [-1.0, 0.25]], dtype=np.float32)
    assert np.array_equal(decode_pcm(encode_pcm(x, "f32le"), "f32le", 2), x)
    assert np.allclose(decode_pcm(encode_pcm(x, "s16le"), "s16le", 2), x, atol=1 / 32768)
    with pytest.raises(InvalidAudioError, match="whole number"):
        decode_pcm(b"\x00\x00\x00", "s16le", 1)
    with pytest.raises(InvalidAudioError, match="NaN"):
        decode_pcm(np.array([np.nan], dtype="<f4").tobytes(), "f32le", 1)
    with pytest.raises(InvalidAudioError, match="encoding"):
        decode_pcm(b"", "mulaw", 1)
