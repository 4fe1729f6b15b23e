"""Feature sinks: a callback, ``.npy`` files, msgpack files, a JSON-lines window log.

Each sink is a :class:`~ostinato.stream.pipeline.FeatureConsumer` (``consume``,
``end_stream``, ``close``). File sinks hold at most one window in memory: ``.npy`` output is
spooled to a temporary raw file and assembled when its stream ends (row ``i`` is frame ``i``,
which starts at sample ``320 i``; rows of dropped frames are NaN), msgpack output is a
sequence of wire-protocol ``features`` frames (:func:`read_msgpack_features` reads it back).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np

from ostinato.stream.errors import ConfigError
from ostinato.stream.frames import StreamEnd, StreamFeatures
from ostinato.stream.wire import FeaturesFrame, WireLimits, decode_frame, encode_frame

__all__ = ["CallbackSink", "JsonlSummarySink", "MsgpackFileSink", "NpyFileSink", "read_msgpack_features"]

logger = logging.getLogger(__name__)


class CallbackSink:
    """Calls ``fn(features)`` (sync or async) for every window, and ``on_end(end)`` per stream.

    Args:
        fn: Receives each :class:`StreamFeatures`.
        on_end: Receives each :class:`StreamEnd` (optional).
    """

    def __init__(
        self,
        fn: Callable[[StreamFeatures], Awaitable[None] | None],
        on_end: Callable[[StreamEnd], Awaitable[None] | None] | None = None,
    ) -> None:
        self._fn = fn
        self._on_end = on_end

    async def consume(self, features: StreamFeatures) -> None:
        """Pass one window's features to the callback."""
        result = self._fn(features)
        if inspect.isawaitable(result):
            await result

    async def end_stream(self, end: StreamEnd) -> None:
        """Pass the end marker to ``on_end``."""
        if self._on_end is not None:
            result = self._on_end(end)
            if inspect.isawaitable(result):
                await result

    async def close(self) -> None:
        """Nothing to release."""


def _stream_path(template: Path, stream_id: str, seen: dict[str, Path]) -> Path:
    if stream_id in seen:
        return seen[stream_id]
    if "{stream}" in template.name:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stream_id)
        path = template.with_name(template.name.replace("{stream}", safe))
    elif seen:
        raise ConfigError(
            f"output {str(template)!r} receives a second stream ({stream_id!r})",
            hint="put {stream} in the file name to write one file per stream",
        )
    else:
        path = template
    seen[stream_id] = path
    return path


@dataclasses.dataclass(slots=True)
class _Spool:
    path: Path
    raw: IO[bytes]
    dim: int = -1
    segments: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (first frame, count)


class NpyFileSink:
    """Writes each stream's frames to a ``.npy`` file (float32 ``[T, H]``) when it ends.

    Args:
        path: Output file; ``{stream}`` in the name is replaced by the stream id (required
            when several streams share the sink).
    """

    def __init__(self, path: str | Path) -> None:
        self.template = Path(path)
        self._paths: dict[str, Path] = {}
        self._spools: dict[str, _Spool] = {}
        #: Files written so far.
        self.written: list[Path] = []

    async def consume(self, features: StreamFeatures) -> None:
        """Spool one window's frames."""
        if features.num_frames == 0:
            return
        spool = self._spools.get(features.stream_id)
        if spool is None:
            path = _stream_path(self.template, features.stream_id, self._paths)
            path.parent.mkdir(parents=True, exist_ok=True)
            spool = _Spool(path, open(path.with_name(path.name + ".part"), "wb"))  # noqa: SIM115 - closed in _finish
            self._spools[features.stream_id] = spool
        if spool.dim < 0:
            spool.dim = int(features.frames.shape[1])
        spool.segments.append((features.first_frame, features.num_frames))
        spool.raw.write(np.ascontiguousarray(features.frames, dtype="<f4").tobytes())

    async def end_stream(self, end: StreamEnd) -> None:
        """Assemble the stream's ``.npy`` file."""
        spool = self._spools.pop(end.stream_id, None)
        if spool is not None:
            await asyncio.to_thread(self._finish, spool)

    async def close(self) -> None:
        """Assemble the files of streams that did not end (shutdown)."""
        for stream_id in list(self._spools):
            await self.end_stream(StreamEnd(stream_id))

    def _finish(self, spool: _Spool) -> None:
        spool.raw.close()
        part = Path(spool.raw.name)
        total = max((a + n for a, n in spool.segments), default=0)
        out = np.lib.format.open_memmap(spool.path, mode="w+", dtype=np.float32, shape=(total, max(spool.dim, 0)))
        out[:] = np.nan
        with open(part, "rb") as raw:
            for first, count in spool.segments:
                block = np.frombuffer(raw.read(count * spool.dim * 4), dtype="<f4")
                out[first : first + count] = block.reshape(count, spool.dim)
        out.flush()
        del out
        part.unlink()
        self.written.append(spool.path)
        logger.info("wrote %s (%d frames)", spool.path, total)


class MsgpackFileSink:
    """Appends every window as a wire-protocol ``features`` frame to one msgpack file.

    Args:
        path: Output file (all streams; each frame names its stream).
        dtype: ``f32`` or ``f16`` payload.
    """

    def __init__(self, path: str | Path, dtype: str = "f32") -> None:
        if dtype not in ("f32", "f16"):
            raise ConfigError(f"dtype={dtype!r}; expected f32 or f16")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self._file: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    async def consume(self, features: StreamFeatures) -> None:
        """Append one frame."""
        if self._file is None or features.num_frames == 0:
            return
        frame = FeaturesFrame.from_array(
            features.stream_id, features.output, int(features.start_samples[0]), features.frames,
            dtype=self.dtype,  # type: ignore[arg-type]
            frame_stride_samples=features.frame_stride_samples,
        )
        self._file.write(encode_frame(frame, WireLimits(max_message_bytes=1 << 30)))

    async def end_stream(self, end: StreamEnd) -> None:
        """Flush buffered frames."""
        if self._file is not None:
            self._file.flush()

    async def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_msgpack_features(path: str | Path) -> Iterator[FeaturesFrame]:
    """Read back a :class:`MsgpackFileSink` file, frame by frame.

    Raises:
        ProtocolError: On a damaged file.
    """
    limits = WireLimits(max_message_bytes=1 << 30)
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=1 << 30)
        for body in unpacker:
            frame = decode_frame(msgpack.packb(body, use_bin_type=True), limits)
            if isinstance(frame, FeaturesFrame):
                yield frame


class JsonlSummarySink:
    """Writes one JSON object per window (times and timing breakdown) and per stream end.

    Args:
        target: A path, or an open text stream (not closed by the sink).
    """

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, str | Path):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._out: IO[str] = open(target, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._owned = True
        else:
            self._out, self._owned = target, False

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")

    async def consume(self, features: StreamFeatures) -> None:
        """Log one window."""
        t = features.timing
        sr = features.sample_rate
        end_s = (int(features.start_samples[-1]) + 400) / sr if features.num_frames else features.start_s
        self._write({
            "stream": features.stream_id, "window": features.window_index, "frames": features.num_frames,
            "start_s": round(features.start_s, 4), "end_s": round(end_s, 4), "batch_size": t.batch_size,
            "queue_wait_ms": _ms(t.queue_wait_s), "inference_ms": _ms(t.inference_s),
            "post_ms": _ms(t.post_s), "latency_ms": _ms(t.latency_s),
        })

    async def end_stream(self, end: StreamEnd) -> None:
        """Log the end of a stream."""
        self._write({"stream": end.stream_id, "end": True, "samples": end.samples, "error": end.error or None})
        self._out.flush()

    async def close(self) -> None:
        """Close the file (if the sink opened it)."""
        self._out.flush()
        if self._owned:
            self._out.close()


def _ms(value_s: float) -> float:
    return round(value_s * 1000, 3) if math.isfinite(value_s) else -1.0
