"""The ostinato wire protocol: versioned msgpack frames over a WebSocket (binary messages).

One WebSocket message carries one frame: a msgpack map with ``"v"`` (protocol version) and
``"type"``. Frame types, their fields and the conversation are specified in
``docs/protocol.md``; this module is the reference encoder/decoder for both ends. Decoding is
defensive: size, length and nesting limits, strict types, and every failure is a
:class:`~ostinato.stream.errors.ProtocolError` (class ``input``) naming the offending field;
unknown *fields* are ignored (forward compatibility), unknown *types* and versions rejected.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

import msgpack
import numpy as np
import numpy.typing as npt

from ostinato.stream.errors import ErrorClass, InvalidAudioError, ProtocolError

__all__ = [
    "ENCODINGS",
    "PROTOCOL_VERSION",
    "Audio",
    "Bye",
    "End",
    "ErrorFrame",
    "Event",
    "FeaturesFrame",
    "Flush",
    "Frame",
    "Hello",
    "Ready",
    "Status",
    "WireLimits",
    "decode_frame",
    "decode_pcm",
    "encode_frame",
    "encode_pcm",
]

PROTOCOL_VERSION = 1
Encoding = Literal["s16le", "f32le"]
ENCODINGS: tuple[str, ...] = get_args(Encoding)
_BYTES_PER_SAMPLE = {"s16le": 2, "f32le": 4}
_FEATURE_DTYPES: dict[str, np.dtype[Any]] = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2")}


@dataclasses.dataclass(frozen=True, slots=True)
class WireLimits:
    """Bounds applied when decoding (and checked when encoding).

    Args:
        max_message_bytes: Largest accepted message.
        max_str_len: Longest string.
        max_array_len: Longest array.
        max_map_len: Most keys in a map.
        max_depth: Deepest nesting of maps/arrays (the top-level map is depth 1).
    """

    max_message_bytes: int = 4 * 1024 * 1024
    max_str_len: int = 64 * 1024
    max_array_len: int = 4096
    max_map_len: int = 256
    max_depth: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name}={getattr(self, f.name)}; expected >= 1")


# -- frames: client (audio sender) -> server -----------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """Opens a stream. ``role="send"``: this peer sends audio; ``"receive"``: it wants audio.
    ``last_output_seq`` (resume): the highest output ``seq`` this peer received; the server
    replays the later ones it still holds."""

    sample_rate: int
    encoding: Encoding = "f32le"
    channels: int = 1
    stream_id: str = ""
    role: Literal["send", "receive"] = "send"
    outputs: tuple[str, ...] = ("events", "status")
    resume_from_seq: int | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_output_seq: int | None = None
    type: Literal["hello"] = "hello"


@dataclasses.dataclass(frozen=True, slots=True)
class Audio:
    """PCM bytes; ``seq`` counts audio frames from 0, ``start_sample`` (optional) is the
    index of the first sample at the stream's own rate, so a receiver can fill gaps exactly."""

    seq: int
    pcm: bytes
    start_sample: int | None = None
    type: Literal["audio"] = "audio"


@dataclasses.dataclass(frozen=True, slots=True)
class Flush:
    """Asks the receiver to emit everything computable from the audio so far."""

    type: Literal["flush"] = "flush"


@dataclasses.dataclass(frozen=True, slots=True)
class End:
    """End of the audio stream (the sender will send no more audio)."""

    type: Literal["end"] = "end"


# -- frames: server -> client ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """Answer to ``hello``: the stream is open; describes the audio or features to come."""

    stream_id: str
    sample_rate: int = 16000
    encoding: Encoding = "f32le"
    channels: int = 1
    frame_stride_samples: int = 320
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    type: Literal["ready"] = "ready"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A detector event (``match``, ``novelty``…) as the JSON object of docs/events.md;
    ``seq`` numbers the stream's output frames (event, features, status) so loss shows."""

    event: dict[str, Any]
    seq: int | None = None
    type: Literal["event"] = "event"


@dataclasses.dataclass(frozen=True, slots=True)
class FeaturesFrame:
    """Frame features: ``data`` is ``[num_frames, dim]`` row-major little-endian ``dtype``;
    frame ``j`` starts at sample ``start_sample + j * frame_stride_samples`` (16 kHz)."""

    stream_id: str
    output: str
    start_sample: int
    num_frames: int
    dim: int
    data: bytes
    dtype: Literal["f32", "f16"] = "f32"
    frame_stride_samples: int = 320
    seq: int | None = None
    type: Literal["features"] = "features"

    @classmethod
    def from_array(
        cls, stream_id: str, output: str, start_sample: int, frames: npt.NDArray[np.floating[Any]],
        dtype: Literal["f32", "f16"] = "f32", frame_stride_samples: int = 320,
    ) -> FeaturesFrame:
        """Pack a ``[T, H]`` array."""
        arr = np.ascontiguousarray(frames, dtype=_FEATURE_DTYPES[dtype])
        if arr.ndim != 2:
            raise ValueError(f"frames shape={arr.shape}; expected [num_frames, dim]")
        return cls(stream_id, output, int(start_sample), int(arr.shape[0]), int(arr.shape[1]),
                   arr.tobytes(), dtype, frame_stride_samples)

    def to_array(self) -> npt.NDArray[np.float32]:
        """Unpack to float32 ``[num_frames, dim]``."""
        arr = np.frombuffer(self.data, dtype=_FEATURE_DTYPES[self.dtype])
        return np.asarray(arr.reshape(self.num_frames, self.dim), dtype=np.float32)


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """Periodic stream status: lag, drops by reason, health and its reasons, and the input
    level (RMS of the latest audio block in dBFS, floored at -120) for level meters.
    ``seq``: output sequence number; ``through_seq``: the last audio ``seq`` fully processed
    (its features and events were produced), so the sender may forget audio up to it."""

    lag_s: float = 0.0
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    health: Literal["ok", "degraded", "failing"] = "ok"
    reasons: tuple[str, ...] = ()
    frames: int = 0
    audio_s: float = 0.0
    level_dbfs: float = -120.0
    seq: int | None = None
    through_seq: int | None = None
    type: Literal["status"] = "status"


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorFrame:
    """A typed error: ``error_class`` tells the peer whether to fix input, retry or give up."""

    code: str
    message: str
    error_class: Literal["input", "transient", "permanent"] = "input"
    hint: str = ""
    fatal: bool = False
    type: Literal["error"] = "error"


@dataclasses.dataclass(frozen=True, slots=True)
class Bye:
    """Last frame before closing; ``reason`` is ``end``, ``shutdown``, ``error`` or ``idle``."""

    reason: str = "end"
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    type: Literal["bye"] = "bye"


Frame = Hello | Audio | Flush | End | Ready | Event | FeaturesFrame | Status | ErrorFrame | Bye
_TYPES: dict[str, type[Any]] = {
    "hello": Hello, "audio": Audio, "flush": Flush, "end": End, "ready": Ready, "event": Event,
    "features": FeaturesFrame, "status": Status, "error": ErrorFrame, "bye": Bye,
}

# -- field schema ------------------------------------------------------------------------------

_FIELD_TYPES: dict[str, tuple[type[Any], ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bytes": (bytes,), "bool": (bool,),
    "dict": (dict,), "list": (list,),
}


def _kind(annotation: str) -> str:
    # Annotations are strings here (PEP 563); map each to the msgpack type it arrives as.
    for prefix, kind in (("bytes", "bytes"), ("bool", "bool"), ("int", "int"), ("float", "float"),
                         ("dict", "dict"), ("tuple", "list")):
        if annotation.startswith(prefix):
            return kind
    return "str"  # str, Literal[...] and the Encoding alias


_SCHEMAS: dict[type[Any], dict[str, str]] = {
    cls: {f.name: _kind(str(f.type)) for f in dataclasses.fields(cls) if f.name != "type"}
    for cls in _TYPES.values()
}


def encode_frame(frame: Frame, limits: WireLimits = WireLimits()) -> bytes:
    """Serialize a frame to one msgpack message.

    Args:
        frame: Any frame dataclass.
        limits: Size limit the message must respect.

    Returns:
        The message bytes.

    Raises:
        ProtocolError: If the encoded message exceeds ``limits.max_message_bytes``.
    """
    body: dict[str, Any] = {"v": PROTOCOL_VERSION}
    for f in dataclasses.fields(frame):
        value = getattr(frame, f.name)
        if value is None:
            continue
        body[f.name] = list(value) if isinstance(value, tuple) else value
    data: bytes = msgpack.packb(body, use_bin_type=True)
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(
            f"{frame.type} frame is {len(data)} bytes; limit is {limits.max_message_bytes}",
            hint="send smaller audio blocks or fewer frames per message",
        )
    return data


def decode_frame(data: bytes | bytearray | memoryview, limits: WireLimits = WireLimits()) -> Frame:
    """Parse and validate one message.

    Args:
        data: The message bytes.
        limits: Decoding limits.

    Returns:
        The frame dataclass.

    Raises:
        ProtocolError: On oversize, malformed msgpack, bad nesting, wrong version, unknown
            type, missing or mistyped fields.
    """
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(f"message is {len(data)} bytes; limit is {limits.max_message_bytes}")
    try:
        body = msgpack.unpackb(
            bytes(data), raw=False, strict_map_key=True, use_list=True,
            max_str_len=limits.max_str_len, max_bin_len=limits.max_message_bytes,
            max_array_len=limits.max_array_len, max_map_len=limits.max_map_len, max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise ProtocolError(f"malformed msgpack message: {e}") from e
    except RecursionError as e:  # pragma: no cover - msgpack's own stack limit fires first
        raise ProtocolError("message nesting too deep") from e
    if not isinstance(body, dict):
        raise ProtocolError(f"message is a msgpack {type(body).__name__}; expected a map with 'v' and 'type'")
    _check_depth(body, limits.max_depth)
    version = body.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version v={version!r}; this peer speaks v={PROTOCOL_VERSION}",
            hint="upgrade the older side; both ends must speak the same protocol version",
        )
    kind = body.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown frame type={kind!r}; expected one of {sorted(_TYPES)}")
    frame: Frame = _build(cls, body)
    return frame


def _build(cls: type[Any], body: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "type":
            continue
        if f.name not in body or body[f.name] is None:
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if not has_default:
                raise ProtocolError(f"{body['type']} frame lacks required field {f.name!r}")
            continue
        value = body[f.name]
        kind = _SCHEMAS[cls][f.name]
        ok = isinstance(value, _FIELD_TYPES[kind]) and not (kind in ("int", "float") and isinstance(value, bool))
        if kind == "list":
            ok = ok and all(isinstance(v, str) for v in value)
        if not ok:
            raise ProtocolError(f"{body['type']}.{f.name}={_short(value)}; expected {kind}")
        kwargs[f.name] = tuple(value) if kind == "list" else float(value) if kind == "float" else value
    try:
        frame = cls(**kwargs)
    except (TypeError, ValueError) as e:  # pragma: no cover - guarded by the checks above
        raise ProtocolError(f"invalid {body['type']} frame: {e}") from e
    _validate(frame)
    return frame


def _validate(frame: Any) -> None:
    for name in ("seq", "through_seq", "last_output_seq", "resume_from_seq"):
        value = getattr(frame, name, None)
        if value is not None and value < 0:
            raise ProtocolError(f"{frame.type}.{name}={value}; expected >= 0")
    if isinstance(frame, Hello):
        if frame.encoding not in ENCODINGS:
            raise ProtocolError(f"hello.encoding={frame.encoding!r}; expected one of {ENCODINGS}")
        if not 1000 <= frame.sample_rate <= 768_000:
            raise ProtocolError(f"hello.sample_rate={frame.sample_rate}; expected 1000..768000 Hz")
        if not 1 <= frame.channels <= 64:
            raise ProtocolError(f"hello.channels={frame.channels}; expected 1..64")
        if frame.role not in ("send", "receive"):
            raise ProtocolError(f"hello.role={frame.role!r}; expected 'send' or 'receive'")
    elif isinstance(frame, Audio) and (frame.seq < 0 or (frame.start_sample or 0) < 0):
        raise ProtocolError(f"audio.seq={frame.seq}, start_sample={frame.start_sample}; expected >= 0")
    elif isinstance(frame, FeaturesFrame):
        itemsize = _FEATURE_DTYPES[frame.dtype].itemsize if frame.dtype in _FEATURE_DTYPES else 0
        if not itemsize or frame.num_frames < 0 or frame.dim < 0 or len(frame.data) != frame.num_frames * frame.dim * itemsize:
            raise ProtocolError(
                f"features: dtype={frame.dtype!r}, {frame.num_frames}x{frame.dim} does not match {len(frame.data)} data bytes"
            )
    elif isinstance(frame, ErrorFrame) and frame.error_class not in tuple(ErrorClass):
        raise ProtocolError(f"error.error_class={frame.error_class!r}; expected one of {[c.value for c in ErrorClass]}")
    elif isinstance(frame, Status):
        if frame.health not in ("ok", "degraded", "failing"):
            raise ProtocolError(f"status.health={frame.health!r}; expected ok, degraded or failing")
        if not all(isinstance(k, str) and isinstance(v, int) for k, v in frame.dropped.items()):
            raise ProtocolError(f"status.dropped={_short(frame.dropped)}; expected a map of reason -> count")


def _check_depth(obj: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise ProtocolError(f"message nesting depth > {max_depth}")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- PCM -------------------------------------------------------------------------------------


def decode_pcm(pcm: bytes, encoding: str, channels: int) -> npt.NDArray[np.float32]:
    """Turn PCM bytes into float32 samples ``[n, channels]`` in [-1, 1].

    Args:
        pcm: Interleaved little-endian samples.
        encoding: ``s16le`` or ``f32le``.
        channels: Interleaved channel count.

    Returns:
        Float32 array ``[n, channels]``.

    Raises:
        InvalidAudioError: On an unknown encoding, a byte count that is not a whole number of
            frames, or NaN/Inf samples.
    """
    if encoding not in _BYTES_PER_SAMPLE:
        raise InvalidAudioError(f"encoding={encoding!r}; expected one of {ENCODINGS}")
    frame_bytes = _BYTES_PER_SAMPLE[encoding] * channels
    if len(pcm) % frame_bytes:
        raise InvalidAudioError(
            f"{len(pcm)} PCM bytes is not a whole number of {encoding} frames of {channels} channel(s) ({frame_bytes} bytes each)"
        )
    if encoding == "s16le":
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    else:
        x = np.frombuffer(pcm, dtype="<f4").astype(np.float32)
        if x.size and not np.isfinite(x).all():
            raise InvalidAudioError("f32le audio contains NaN or Inf samples")
    return x.reshape(-1, channels)


def encode_pcm(samples: npt.NDArray[np.floating[Any]], encoding: str) -> bytes:
    """Turn float samples (``[n]`` or ``[n, channels]``, in [-1, 1]) into PCM bytes.

    Args:
        samples: Float audio.
        encoding: ``s16le`` (clipped to [-1, 1]) or ``f32le``.

    Returns:
        Interleaved little-endian PCM.
    """
    x = np.asarray(samples, dtype=np.float32)
    if encoding == "s16le":
        return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()
    if encoding == "f32le":
        return x.astype("<f4").tobytes()
    raise InvalidAudioError(f"encoding={encoding!r}; expected one of {ENCODINGS}")
