"""What every audio source shares: the :class:`Source` protocol, block conversion, spec parsing.

A source is an async iterator of :class:`~ostinato.stream.frames.AudioChunk` at 16 kHz mono
with contiguous ``start_sample`` positions (a source that loses audio reports the gap by
jumping ``start_sample`` forward; the pipeline fills it with silence and counts it). Sources
are "live" when audio arrives in real time whether or not we keep up (mic, network, paced
file): the pipeline then gives them a ``drop_oldest`` edge instead of backpressure.

:func:`open_source` turns a CLI spec (``file:PATH``, ``mic[:DEVICE]``, ``stdin:RATE:FORMAT``,
``ws://…``) into a source.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ostinato.stream.errors import ConfigError
from ostinato.stream.frames import AudioChunk
from ostinato.stream.resample import PIPELINE_SAMPLE_RATE, StreamResampler

__all__ = ["ArraySource", "BlockConverter", "Source", "open_source"]


class Source(Protocol):
    """An audio source feeding one stream of a pipeline."""

    stream_id: str
    live: bool

    def chunks(self) -> AsyncIterator[AudioChunk]:
        """Yield 16 kHz mono chunks until the audio ends or :meth:`stop` is called."""
        ...

    def stop(self) -> None:
        """Ask the source to end its iteration soon (graceful: no audio is cut mid-chunk)."""
        ...

    async def close(self) -> None:
        """Release devices, files and connections. Idempotent."""
        ...


class BlockConverter:
    """Turns blocks at the source's rate/channels into contiguous 16 kHz mono chunks.

    Args:
        stream_id: Stamped on every chunk.
        in_rate: Source sample rate (Hz).
        channels: Source channel count.
        clock: Stamps ``received_s``.
    """

    def __init__(self, stream_id: str, in_rate: int, channels: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream_id = stream_id
        self.in_rate = in_rate
        self.channels = channels
        self._resampler = StreamResampler(in_rate, channels)
        self._clock = clock
        #: Next 16 kHz sample index to emit.
        self.position = 0
        #: Source-rate samples received (blocks + gaps).
        self.in_samples = 0

    def convert(self, block: npt.ArrayLike) -> list[AudioChunk]:
        """Convert one block; returns zero or one chunk (the resampler may hold samples back)."""
        x = np.asarray(block)
        self.in_samples += int(x.shape[0]) if x.ndim else 0
        return self._emit(self._resampler.push(x))

    def gap(self, in_samples: int) -> list[AudioChunk]:
        """Account for ``in_samples`` lost source samples by emitting silence in their place.

        The silence runs through the resampler too, so its state and the timeline stay exact.
        """
        if in_samples <= 0:
            return []
        shape = (in_samples,) if self.channels == 1 else (in_samples, self.channels)
        return self.convert(np.zeros(shape, dtype=np.float32))

    def finish(self) -> list[AudioChunk]:
        """Flush the resampler at end of stream."""
        return self._emit(self._resampler.flush())

    def _emit(self, samples: npt.NDArray[np.float32]) -> list[AudioChunk]:
        if samples.shape[0] == 0:
            return []
        chunk = AudioChunk(self.stream_id, self.position, samples, PIPELINE_SAMPLE_RATE, self._clock())
        self.position += int(samples.shape[0])
        return [chunk]


class ArraySource:
    """Streams an in-memory array (tests, uploads, notebooks), optionally paced in real time.

    Args:
        audio: Float samples ``[n]`` or ``[n, channels]``.
        sample_rate: Rate of ``audio`` (resampled to 16 kHz).
        stream_id: Stream id.
        block_samples: Block size, or a sequence of sizes used in turn (any chunking).
        realtime: Deliver no faster than real time.
    """

    def __init__(
        self,
        audio: npt.ArrayLike,
        sample_rate: int = PIPELINE_SAMPLE_RATE,
        *,
        stream_id: str = "array",
        block_samples: int | Sequence[int] = 1600,
        realtime: bool = False,
    ) -> None:
        self.audio = np.asarray(audio)
        if self.audio.ndim not in (1, 2):
            raise ConfigError(f"audio shape={self.audio.shape}; expected [n] or [n, channels]")
        sizes = [block_samples] if isinstance(block_samples, int) else list(block_samples)
        if not sizes or any(not isinstance(b, int) or b < 1 for b in sizes):
            raise ConfigError(f"block_samples={block_samples!r}; expected positive integers")
        self.block_sizes = sizes
        self.sample_rate = sample_rate
        self.channels = 1 if self.audio.ndim == 1 else int(self.audio.shape[1])
        self.stream_id = stream_id
        self.live = realtime
        self._stop = False

    def stop(self) -> None:
        """End after the current block."""
        self._stop = True

    async def close(self) -> None:
        """Nothing to release."""

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        """Yield the array block by block."""
        converter = BlockConverter(self.stream_id, self.sample_rate, self.channels)
        started_s = time.monotonic()
        pos = 0
        for size in itertools.cycle(self.block_sizes):
            if self._stop or pos >= self.audio.shape[0]:
                break
            block = self.audio[pos : pos + size]
            pos += block.shape[0]
            if self.live:
                await asyncio.sleep(max(0.0, started_s + pos / self.sample_rate - time.monotonic()))
            for chunk in converter.convert(block):
                yield chunk
            await asyncio.sleep(0)  # let other streams interleave at full speed
        for chunk in converter.finish():
            yield chunk


def open_source(
    spec: str,
    *,
    stream_id: str | None = None,
    realtime: bool = False,
    loop: bool = False,
) -> Source:
    """Build a source from a CLI spec.

    Args:
        spec: ``file:PATH`` (or a bare path), ``mic`` / ``mic:DEVICE``,
            ``stdin:RATE:FORMAT[:CHANNELS]`` (FORMAT ``s16le`` or ``f32le``), or a
            ``ws://``/``wss://`` URL of an ostinato audio feed.
        stream_id: Stream id (default derived from the spec).
        realtime: Pace file sources at real time.
        loop: Loop file sources forever.

    Returns:
        The source (not started: iterate its ``chunks()``).

    Raises:
        ConfigError: If the spec is malformed.
        SourceUnavailableError: If a file does not exist or cannot be decoded.
    """
    if spec.startswith(("ws://", "wss://")):
        from ostinato.stream.source_net import NetSource

        return NetSource(spec, stream_id=stream_id)
    if spec == "mic" or spec.startswith("mic:"):
        from ostinato.stream.source_mic import MicSource

        device = spec[4:] or None
        return MicSource(device=int(device) if device and device.isdigit() else device, stream_id=stream_id or "mic")
    if spec.startswith("stdin:"):
        from ostinato.stream.source_stdin import StdinSource

        parts = spec.split(":")
        if len(parts) not in (3, 4) or not parts[1].isdigit() or (len(parts) == 4 and not parts[3].isdigit()):
            raise ConfigError(
                f"source={spec!r}; expected stdin:RATE:FORMAT[:CHANNELS], e.g. stdin:16000:s16le or stdin:48000:f32le:2"
            )
        channels = int(parts[3]) if len(parts) == 4 else 1
        return StdinSource(int(parts[1]), parts[2], channels=channels, stream_id=stream_id or "stdin")
    if "://" in spec:
        raise ConfigError(f"source={spec!r}; URLs must be ws:// or wss:// (ostinato wire protocol)")
    from ostinato.stream.source_file import FileSource

    path = spec[5:] if spec.startswith("file:") else spec
    if not path:
        raise ConfigError("source='file:'; expected file:PATH")
    return FileSource(path, stream_id=stream_id, realtime=realtime, loop=loop)
