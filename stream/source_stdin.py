"""StdinSource: raw PCM (s16le or f32le) from standard input or any binary stream.

The format is declared, not sniffed: ``stdin:RATE:FORMAT[:CHANNELS]``, e.g.
``sox in.mp3 -t raw -e signed -b 16 -r 16000 -c 1 - | ostinato run --source stdin:16000:s16le``.
Pipes, FIFOs and terminals are read without blocking the event loop (``connect_read_pipe``,
whose flow control pushes back on the writer while the pipeline is busy); regular files and
in-memory streams are read on a worker thread. Partial frames are carried over between reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from typing import BinaryIO

from ostinato.stream.errors import ConfigError
from ostinato.stream.frames import AudioChunk
from ostinato.stream.sources import BlockConverter
from ostinato.stream.wire import ENCODINGS, decode_pcm

__all__ = ["StdinSource"]

logger = logging.getLogger(__name__)

_BYTES_PER_SAMPLE = {"s16le": 2, "f32le": 4}


class StdinSource:
    """Reads raw interleaved PCM.

    Args:
        sample_rate: Declared sample rate (Hz).
        encoding: ``s16le`` or ``f32le``.
        channels: Declared channel count.
        stream_id: Stream id.
        stream: Binary stream to read (default ``sys.stdin.buffer``).
        block_s: Audio per read.
        live: Treat as a live feed (``drop_oldest`` edge) instead of applying backpressure.

    Raises:
        ConfigError: On an unknown encoding or an invalid rate/channel count.
    """

    def __init__(
        self,
        sample_rate: int,
        encoding: str = "s16le",
        *,
        channels: int = 1,
        stream_id: str = "stdin",
        stream: BinaryIO | None = None,
        block_s: float = 0.1,
        live: bool = False,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ConfigError(f"format={encoding!r}; expected one of {ENCODINGS}")
        if not 1000 <= sample_rate <= 768_000:
            raise ConfigError(f"rate={sample_rate}; expected 1000..768000 Hz")
        if not 1 <= channels <= 64:
            raise ConfigError(f"channels={channels}; expected 1..64")
        self.sample_rate = sample_rate
        self.encoding = encoding
        self.channels = channels
        self.stream_id = stream_id
        self.live = live
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._frame_bytes = _BYTES_PER_SAMPLE[encoding] * channels
        self._read_bytes = max(1, round(block_s * sample_rate)) * self._frame_bytes
        self._stopped = False
        self._transport: asyncio.ReadTransport | None = None

    def stop(self) -> None:
        """End after the current read."""
        self._stopped = True
        if self._transport is not None:
            self._transport.close()

    async def close(self) -> None:
        """Stop reading (the stream itself is not closed: it belongs to the caller)."""
        self.stop()

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        """Yield 16 kHz mono chunks until end of input."""
        converter = BlockConverter(self.stream_id, self.sample_rate, self.channels)
        carry = b""
        async for data in self._reads():
            data = carry + data
            usable = len(data) - len(data) % self._frame_bytes
            carry = data[usable:]
            if usable:
                samples = decode_pcm(data[:usable], self.encoding, self.channels)
                for chunk in converter.convert(samples if self.channels > 1 else samples[:, 0]):
                    yield chunk
        if carry:
            logger.warning("stdin ended with %d byte(s) of a partial %s frame; ignored", len(carry), self.encoding)
        for chunk in converter.finish():
            yield chunk

    async def _reads(self) -> AsyncIterator[bytes]:
        if self._is_pipe():
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=4 * self._read_bytes)
            self._transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self._stream)
            try:
                while not self._stopped:
                    data = await reader.read(self._read_bytes)
                    if not data:
                        return
                    yield data
            finally:
                self._transport.close()
                self._transport = None
        else:
            while not self._stopped:
                data = await asyncio.to_thread(self._stream.read, self._read_bytes)
                if not data:
                    return
                yield data

    def _is_pipe(self) -> bool:
        try:
            mode = os.fstat(self._stream.fileno()).st_mode
        except (AttributeError, OSError, ValueError):  # BytesIO and friends have no descriptor
            return False
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)
