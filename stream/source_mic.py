"""MicSource: live capture through sounddevice (PortAudio), imported only when used.

PortAudio calls :meth:`MicSource._callback` on its own thread for every block. The callback
does one thing: ``loop.call_soon_threadsafe(channel.offer, indata.copy())`` (the copy is
required: PortAudio reuses the buffer). The channel is ``drop_oldest``, so the callback never
waits; when the consumer falls behind, the oldest blocks are dropped and counted, and the
source emits silence in their place so the stream's timeline stays exact (block size is
fixed, so a count of dropped blocks is a count of lost samples).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.stream.channel import Channel
from ostinato.stream.errors import ConfigError, SourceUnavailableError
from ostinato.stream.frames import AudioChunk
from ostinato.stream.metrics import StreamMetrics
from ostinato.stream.sources import BlockConverter

__all__ = ["MicSource", "import_sounddevice", "list_input_devices"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "install PortAudio and the mic extra: `sudo apt-get install libportaudio2` (Debian/Ubuntu) "
    "or `brew install portaudio` (macOS), then `pip install 'ostinato[mic]'`"
)


def import_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing module or PortAudio library into a hint.

    Raises:
        SourceUnavailableError: If sounddevice or the PortAudio library is missing.
    """
    try:
        import sounddevice
    except ImportError as e:
        raise SourceUnavailableError("the sounddevice package is not installed", hint=_INSTALL_HINT) from e
    except OSError as e:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise SourceUnavailableError(f"the PortAudio library cannot be loaded: {e}", hint=_INSTALL_HINT) from e
    module: ModuleType = sounddevice
    return module


def list_input_devices() -> list[dict[str, Any]]:
    """Input devices as dicts: ``index``, ``name``, ``hostapi``, ``channels``, ``sample_rate``, ``default``.

    Raises:
        SourceUnavailableError: If sounddevice/PortAudio is missing.
    """
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0] if sd.default.device is not None else -1
        hostapis = sd.query_hostapis()
    except Exception as e:  # PortAudioError when the host has no audio subsystem
        raise SourceUnavailableError(f"cannot list audio devices: {e}", hint=_INSTALL_HINT) from e
    return [
        {
            "index": int(d["index"]),
            "name": str(d["name"]),
            "hostapi": str(hostapis[d["hostapi"]]["name"]),
            "channels": int(d["max_input_channels"]),
            "sample_rate": float(d["default_samplerate"]),
            "default": int(d["index"]) == default_in,
        }
        for d in devices
        if d["max_input_channels"] > 0
    ]


class MicSource:
    """Captures a microphone (or any PortAudio input).

    Args:
        device: Device index or (part of a) name; ``None``: the system default input.
        stream_id: Stream id.
        sample_rate: Capture rate (default: the device's default rate; resampled to 16 kHz).
        channels: Captured channels (downmixed to mono).
        block_s: Capture block duration (latency vs. callback overhead).
        queue_blocks: Blocks buffered between the audio thread and the pipeline.
        metrics: Counts lost samples (``ostinato_source_gap_samples_total{source="mic"}``).
        stream_factory: Builds the input stream (default ``sounddevice.InputStream``); the
            keyword arguments are those of ``InputStream``. Tests pass their own.
    """

    live = True

    def __init__(
        self,
        device: int | str | None = None,
        *,
        stream_id: str = "mic",
        sample_rate: int | None = None,
        channels: int = 1,
        block_s: float = 0.02,
        queue_blocks: int = 250,
        metrics: StreamMetrics | None = None,
        stream_factory: Callable[..., Any] | None = None,
    ) -> None:
        if not 0.001 <= block_s <= 1.0:
            raise ConfigError(f"block_s={block_s}; expected 0.001..1.0 seconds")
        if not 1 <= channels <= 64:
            raise ConfigError(f"channels={channels}; expected 1..64")
        self.device = device
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_s = block_s
        self._metrics = metrics
        self._factory = stream_factory
        self._raw: Channel[npt.NDArray[np.float32]] = Channel(queue_blocks, "drop_oldest", name="mic_raw", metrics=metrics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        #: PortAudio status flags seen (input overflow etc.), by text.
        self.status_counts: dict[str, int] = {}

    @property
    def dropped_blocks(self) -> int:
        """Blocks dropped because the pipeline fell behind."""
        return self._raw.dropped["drop_oldest"]

    def _callback(self, indata: npt.NDArray[np.float32], frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: copy and hand over, nothing else (the loop applies the policy)."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._raw.offer, indata.copy())
        if status:
            loop.call_soon_threadsafe(self._note_status, str(status))

    def _note_status(self, text: str) -> None:
        self.status_counts[text] = self.status_counts.get(text, 0) + 1
        if self.status_counts[text] == 1:
            logger.warning("microphone %s reported: %s", self.stream_id, text)

    def _open(self) -> tuple[Any, int, int]:
        if self._factory is not None:
            rate = self.sample_rate or 16000
            factory = self._factory
        else:
            sd = import_sounddevice()
            try:
                info = sd.query_devices(self.device, "input")
            except (ValueError, sd.PortAudioError) as e:
                raise SourceUnavailableError(
                    f"input device {self.device!r} not found: {e}", hint="run `ostinato devices` to list inputs"
                ) from e
            rate = self.sample_rate or int(info["default_samplerate"])
            factory = sd.InputStream
        block = max(1, round(self.block_s * rate))
        try:
            stream = factory(
                device=self.device, channels=self.channels, samplerate=rate, blocksize=block,
                dtype="float32", callback=self._callback,
            )
            stream.start()
        except SourceUnavailableError:
            raise
        except Exception as e:  # PortAudioError: device busy, unsupported rate/channels
            raise SourceUnavailableError(
                f"cannot open input device {self.device!r} at {rate} Hz, {self.channels} channel(s): {e}",
                hint="pick another device or rate; `ostinato devices` lists inputs and their default rates",
            ) from e
        return stream, rate, block

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        """Open the device and yield 16 kHz mono chunks until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stream, rate, block = await asyncio.to_thread(self._open)
        logger.info("capturing %r at %d Hz in blocks of %d samples", self.device, rate, block)
        converter = BlockConverter(self.stream_id, rate, self.channels, time.monotonic)
        seen_drops = 0
        try:
            async for data in self._raw:
                lost = self.dropped_blocks - seen_drops  # dropped right before this block
                seen_drops += lost
                if lost:
                    if self._metrics is not None:
                        self._metrics.source_gap_samples.labels("mic").inc(lost * block)
                    for chunk in converter.gap(lost * block):
                        yield chunk
                for chunk in converter.convert(data if self.channels > 1 else data[:, 0]):
                    yield chunk
            for chunk in converter.finish():
                yield chunk
        finally:
            await self.close()

    def stop(self) -> None:
        """Stop capturing: blocks already queued are still delivered."""
        self._raw.close()

    async def close(self) -> None:
        """Stop and close the PortAudio stream. Idempotent."""
        self._raw.close()
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_stop_and_close, stream)


def _stop_and_close(stream: Any) -> None:
    try:
        stream.stop()
    finally:
        stream.close()
