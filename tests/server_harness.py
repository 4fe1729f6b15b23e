"""Helpers shared by the service tests: a real server on 127.0.0.1 and test audio.

Not a test module (no ``test_`` prefix); imported by ``tests/test_server_*.py``,
``tests/test_client.py`` and ``tests/test_dashboard.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from ostinato.limits import ServiceLimits
from ostinato.models import ModelConfig
from ostinato.server import RunningServer, ServerConfig, start_server
from ostinato.stream.wire import Audio, encode_frame, encode_pcm

SAMPLE_RATE = 16_000


@contextlib.asynccontextmanager
async def running_server(model_dir: Path | None, **overrides: Any) -> AsyncIterator[RunningServer]:
    """Start the service on a free loopback port with the tiny model; stop it afterwards.

    Keyword arguments override :class:`ServerConfig` fields, or :class:`ServiceLimits` fields
    when prefixed with ``limits_`` (``limits_max_streams=2``).
    """
    limit_fields = {k.removeprefix("limits_"): v for k, v in overrides.items() if k.startswith("limits_")}
    config_fields = {k: v for k, v in overrides.items() if not k.startswith("limits_")}
    limits = dataclasses.replace(ServiceLimits(), **limit_fields)
    config = ServerConfig(host="127.0.0.1", port=0, limits=limits, **config_fields)
    models = [ModelConfig.from_json({"name": "tiny", "model_dir": str(model_dir), "provider": "cpu"})] if model_dir else []
    server = await start_server(config, models)
    try:
        yield server
    finally:
        await server.stop()


@contextlib.contextmanager
def slowed_model(server: RunningServer, delay_s: float) -> Iterator[None]:
    """Make the real ``tiny`` model of ``server`` sleep ``delay_s`` before each inference call.

    Both entry points are slowed: ``run_batch`` (whole windows) and ``encode`` (the conv-frame
    cache path a split model takes); the originals are restored on exit.
    """
    model = server.service.catalog.get("tiny").model
    originals = {name: getattr(model, name) for name in ("run_batch", "encode")}

    def slowed(fn: Any) -> Any:
        def call(*args: object, **kwargs: object) -> object:
            time.sleep(delay_s)
            return fn(*args, **kwargs)

        return call

    for name, fn in originals.items():
        setattr(model, name, slowed(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(model, name, fn)


async def send_audio(ws: aiohttp.ClientWebSocketResponse, audio: np.ndarray, block: int = 1600, first_seq: int = 0,
                     encoding: str = "f32le") -> int:
    """Send ``audio`` as raw ``Audio`` frames of ``block`` samples; return the next sequence number."""
    seq = first_seq
    for i in range(0, len(audio), block):
        await ws.send_bytes(encode_frame(Audio(seq=seq, pcm=encode_pcm(audio[i:i + block], encoding), start_sample=i)))
        seq += 1
    return seq


def melody(seed: int, duration_s: float, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float32]:
    """Random tone sequence (quarter-second notes, 200-1200 Hz): distinct per seed."""
    rng = np.random.default_rng(seed)
    note = int(0.25 * sample_rate)
    t_s = np.arange(note) / sample_rate
    notes = [0.3 * np.sin(2 * np.pi * rng.uniform(200, 1200) * t_s) * np.hanning(note) for _ in range(int(duration_s / 0.25))]
    return np.concatenate(notes).astype(np.float32)


def harmonic_notes(seed: int, seconds: float, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float32]:
    """Random harmonic notes of one timbre (0.1-0.3 s each, 150-500 Hz, 4 partials): distinct per seed."""
    rng = np.random.default_rng(seed)
    parts: list[npt.NDArray[np.float32]] = []
    while sum(p.size for p in parts) < seconds * sample_rate:
        n = int(rng.uniform(0.1, 0.3) * sample_rate)
        t = np.arange(n) / sample_rate
        f0 = rng.uniform(150, 500)
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
        parts.append((0.2 * tone * np.minimum(1.0, t / 0.01) * np.exp(-3 * t)).astype(np.float32))
    return np.concatenate(parts)[: int(seconds * sample_rate)]


def planted_repeats(seed: int = 0, sample_rate: int = SAMPLE_RATE) -> tuple[npt.NDArray[np.float32], list[tuple[float, float]]]:
    """12 s of audio where a 2 s motif occurs at 3 s and again at 8 s (filler elsewhere).

    Returns:
        ``(audio, [(start_s, end_s) of each occurrence])``.
    """
    rng = np.random.default_rng(seed)
    motif = melody(seed + 1, 2.0, sample_rate)
    parts = [melody(seed + 2, 3.0, sample_rate), motif, melody(seed + 3, 3.0, sample_rate), motif, melody(seed + 4, 2.0, sample_rate)]
    audio = np.concatenate(parts)
    audio = audio + 0.003 * rng.standard_normal(audio.shape[0]).astype(np.float32)
    return audio.astype(np.float32), [(3.0, 5.0), (8.0, 10.0)]


def write_wav(path: Path, audio: npt.NDArray[np.float32], sample_rate: int = SAMPLE_RATE) -> Path:
    """Write 16-bit PCM WAV."""
    import soundfile as sf

    sf.write(str(path), audio, sample_rate, subtype="PCM_16")
    return path
