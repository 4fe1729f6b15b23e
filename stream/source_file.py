"""FileSource: WAV/FLAC/OGG files through soundfile, at full speed or paced in real time.

Blocks are decoded on a worker thread (file I/O never runs on the event loop), downmixed and
resampled to 16 kHz. With ``realtime=True`` the source delivers audio no faster than its
duration (a stand-in for a live feed, and what ``make demo`` uses); with ``loop=True`` it
starts over at the end, forever, keeping one continuous timeline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ostinato.stream.errors import ConfigError, SourceUnavailableError
from ostinato.stream.frames import AudioChunk
from ostinato.stream.sources import BlockConverter

__all__ = ["FileSource"]

logger = logging.getLogger(__name__)


class FileSource:
    """Reads an audio file as a stream.

    Args:
        path: Audio file (anything libsndfile decodes: WAV, FLAC, OGG/Vorbis, ...).
        stream_id: Stream id (default: the file name).
        realtime: Deliver audio at real-time pace.
        loop: Start over at the end of the file (until :meth:`stop`).
        block_s: Audio per read (default 0.1 s when paced, 1 s otherwise).
        clock: Monotonic clock (pacing and ``received_s``).

    Raises:
        SourceUnavailableError: If the file is missing or not decodable audio.
        ConfigError: If ``block_s`` is not positive.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stream_id: str | None = None,
        realtime: bool = False,
        loop: bool = False,
        block_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import soundfile as sf

        self.path = Path(path)
        if not self.path.is_file():
            raise SourceUnavailableError(f"audio file {str(self.path)!r} does not exist", hint="check the path after file:")
        try:
            info = sf.info(str(self.path))
        except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or TypeError
            raise SourceUnavailableError(
                f"cannot decode {str(self.path)!r}: {e}", hint="use WAV, FLAC or OGG/Vorbis audio"
            ) from e
        if info.frames == 0 or info.samplerate <= 0:
            raise SourceUnavailableError(f"audio file {str(self.path)!r} is empty", hint="record some audio into it")
        self.block_s = block_s if block_s is not None else (0.1 if realtime else 1.0)
        if not self.block_s > 0:
            raise ConfigError(f"block_s={block_s}; expected > 0")
        self.stream_id = stream_id or self.path.name
        self.sample_rate = int(info.samplerate)
        self.channels = int(info.channels)
        self.duration_s = info.frames / info.samplerate
        self.realtime = realtime
        self.loop = loop
        self.live = realtime
        self._clock = clock
        self._stop = asyncio.Event()
        self._file: Any = None

    def stop(self) -> None:
        """End the iteration after the current block."""
        self._stop.set()

    async def close(self) -> None:
        """Close the file. Idempotent."""
        f, self._file = self._file, None
        if f is not None:
            await asyncio.to_thread(f.close)

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        """Yield 16 kHz mono chunks until the end of the file (or forever with ``loop``)."""
        import soundfile as sf

        self._file = await asyncio.to_thread(sf.SoundFile, str(self.path))
        converter = BlockConverter(self.stream_id, self.sample_rate, self.channels, self._clock)
        block = max(1, round(self.block_s * self.sample_rate))
        started_s = self._clock()
        try:
            while not self._stop.is_set():
                data = await asyncio.to_thread(self._file.read, block, "float32", True)
                if data.shape[0] == 0:
                    if not self.loop or converter.in_samples == 0:
                        break
                    await asyncio.to_thread(self._file.seek, 0)
                    continue
                if self.realtime:  # a live feed has a block only once its last sample was "heard"
                    await self._pace(started_s + (converter.in_samples + data.shape[0]) / self.sample_rate)
                for chunk in converter.convert(data):
                    yield chunk
            for chunk in converter.finish():
                yield chunk
        finally:
            await self.close()

    async def _pace(self, due_s: float) -> None:
        delay_s = due_s - self._clock()
        if delay_s <= 0:
            return
        try:
            async with asyncio.timeout(delay_s):
                await self._stop.wait()
        except TimeoutError:
            pass
