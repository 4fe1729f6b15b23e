"""Streaming downmix + resampling to the pipeline rate (sans-IO, soxr).

Every source feeds its blocks through a :class:`StreamResampler`: channels are averaged to
mono first (cheaper than resampling each channel), then soxr's streaming resampler converts
the rate with its state carried across blocks, so block boundaries leave no seams. At the
pipeline rate the samples pass through untouched (bit-exact).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ostinato.stream.errors import ConfigError, InvalidAudioError

__all__ = ["PIPELINE_SAMPLE_RATE", "StreamResampler", "downmix"]

#: Rate of everything after the sources (Wav2Vec2's rate).
PIPELINE_SAMPLE_RATE = 16000
_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
_MAX_RATE = 768_000


def downmix(block: npt.ArrayLike, channels: int) -> npt.NDArray[np.float32]:
    """Average the channels of an audio block into mono float32.

    Args:
        block: Float audio, shape ``[n]`` (mono) or ``[n, channels]``.
        channels: The channel count the block must have.

    Returns:
        Mono float32 samples, shape ``[n]``.

    Raises:
        InvalidAudioError: If the shape does not match ``channels`` or the dtype is not float.
    """
    x = np.asarray(block)
    if x.dtype.kind != "f":
        raise InvalidAudioError(f"audio dtype={x.dtype}; expected float samples in [-1, 1]")
    if x.ndim == 1 and channels == 1:
        return np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != channels:
        raise InvalidAudioError(f"audio shape={x.shape}; expected [n, {channels}] for {channels} channel(s)")
    if channels == 1:
        return np.asarray(x[:, 0], dtype=np.float32)
    return np.asarray(x.mean(axis=1, dtype=np.float32), dtype=np.float32)


class StreamResampler:
    """Downmixes and resamples a block stream to ``out_rate`` (default 16 kHz) mono float32.

    Args:
        in_rate: Input sample rate in Hz.
        channels: Input channel count.
        out_rate: Output sample rate in Hz.
        quality: soxr quality: ``QQ``, ``LQ``, ``MQ``, ``HQ`` (default) or ``VHQ``.

    Raises:
        ConfigError: If a rate, the channel count or the quality is invalid.
    """

    def __init__(
        self,
        in_rate: int,
        channels: int = 1,
        out_rate: int = PIPELINE_SAMPLE_RATE,
        quality: str = "HQ",
    ) -> None:
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if not isinstance(rate, int) or not 1000 <= rate <= _MAX_RATE:
                raise ConfigError(f"{name}={rate!r}; expected an integer sample rate in [1000, {_MAX_RATE}] Hz")
        if not isinstance(channels, int) or not 1 <= channels <= 64:
            raise ConfigError(f"channels={channels!r}; expected an integer in [1, 64]")
        if quality not in _QUALITIES:
            raise ConfigError(f"quality={quality!r}; expected one of {_QUALITIES}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self.quality = quality
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        self._finished = False

    @property
    def passthrough(self) -> bool:
        """True when no resampling happens (input already at ``out_rate``)."""
        return self._stream is None

    def push(self, block: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Convert one block; the output may be shorter or longer than the rate ratio implies
        (the resampler holds a few samples of delay, released by :meth:`flush`).

        Args:
            block: Float audio, ``[n]`` or ``[n, channels]``.

        Returns:
            Mono float32 at ``out_rate``.

        Raises:
            InvalidAudioError: On a shape/dtype mismatch or non-finite samples.
            RuntimeError: After :meth:`flush`.
        """
        if self._finished:
            raise RuntimeError("StreamResampler.push after flush()")
        mono = downmix(block, self.channels)
        if mono.size and not np.isfinite(mono).all():
            raise InvalidAudioError("audio has NaN or Inf samples")
        if self._stream is None:
            return mono
        return np.asarray(self._stream.resample_chunk(np.ascontiguousarray(mono)), dtype=np.float32)

    def flush(self) -> npt.NDArray[np.float32]:
        """Return the samples still inside the resampler; call once at end of stream."""
        if self._finished:
            return np.zeros(0, dtype=np.float32)
        self._finished = True
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return np.asarray(tail, dtype=np.float32)
