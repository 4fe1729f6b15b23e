"""Whole-file audio loading for offline work: decode, downmix to mono, resample with soxr.

Streaming sources resample incrementally (``ostinato.stream``); this module is for files
handled in one piece (``ostinato features``, query by example, GAMA descriptions).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ostinato.runtime.errors import InputError

__all__ = ["load_audio", "to_mono", "resample"]

logger = logging.getLogger(__name__)

# Decoding an hour of 16 kHz float32 takes 230 MB; refuse inputs far beyond what any
# offline command here is meant for rather than exhausting memory.
MAX_FILE_SECONDS = 4 * 3600.0


def to_mono(audio: npt.NDArray[np.floating], channels_last: bool = True) -> npt.NDArray[np.float32]:
    """Average channels: ``[N, C]`` (or ``[N]``) → ``[N]`` float32."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise InputError(f"audio has shape {x.shape}; expected [samples] or [samples, channels]")
    mono: npt.NDArray[np.float32] = x.mean(axis=1 if channels_last else 0, dtype=np.float32)
    return mono


def resample(audio: npt.NDArray[np.float32], sample_rate: int, target_rate: int) -> npt.NDArray[np.float32]:
    """Resample mono audio with soxr (high quality); returns the input when rates match."""
    if sample_rate <= 0 or target_rate <= 0:
        raise InputError(f"sample_rate={sample_rate}, target_rate={target_rate}; expected positive rates")
    if sample_rate == target_rate:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, sample_rate, target_rate, quality="HQ"), dtype=np.float32)


def load_audio(path: str | Path, sample_rate: int = 16000) -> tuple[npt.NDArray[np.float32], int]:
    """Read a WAV/FLAC/OGG file as mono float32 at ``sample_rate``.

    Returns:
        ``(samples, original_sample_rate)``.

    Raises:
        InputError: The file is missing, not decodable audio, empty, too long, or holds NaN/Inf.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {str(path)!r} does not exist", hint="check the path")
    try:
        info = sf.info(str(path))
        if info.frames / max(info.samplerate, 1) > MAX_FILE_SECONDS:
            raise InputError(
                f"{str(path)!r} is {info.frames / info.samplerate / 3600:.1f} h long; the offline "
                f"limit is {MAX_FILE_SECONDS / 3600:.0f} h",
                hint="stream it instead: ostinato run --source file:PATH",
            )
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise InputError(
            f"cannot decode {str(path)!r}: {e}", hint="use WAV, FLAC or OGG/Vorbis audio"
        ) from e
    if data.shape[0] == 0:
        raise InputError(f"{str(path)!r} holds no samples")
    mono = to_mono(data)
    if not np.isfinite(mono).all():
        raise InputError(f"{str(path)!r} holds NaN/Inf samples", hint="repair or re-encode the file")
    return resample(mono, int(file_rate), sample_rate), int(file_rate)
