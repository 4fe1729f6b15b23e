"""Errors raised by :mod:`ostinato.stream`.

Each error is classified (:class:`ErrorClass`): ``input`` (bad data: reject the item or
stream and keep going), ``transient`` (retry with backoff) or ``permanent`` (fail the
stream or run). Each carries a recovery ``hint``. :func:`classify_error` extends the
classification to errors from other layers (ONNX Runtime, the OS, aiohttp).
"""

from __future__ import annotations

import asyncio
import enum

from ostinato.runtime.errors import HintedError

__all__ = [
    "BreakerOpenError",
    "ChannelClosedError",
    "ConfigError",
    "EndOfStream",
    "ErrorClass",
    "InferenceError",
    "InvalidAudioError",
    "ProtocolError",
    "SourceClosedError",
    "SourceConnectionError",
    "SourceError",
    "SourceTimeoutError",
    "SourceUnavailableError",
    "StageError",
    "StreamError",
    "classify_error",
]


class ErrorClass(enum.StrEnum):
    """How the pipeline reacts to an error."""

    INPUT = "input"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class StreamError(HintedError):
    """Base of every streaming error.

    Args:
        message: What went wrong, with the offending value.
        hint: What to do about it.
    """

    error_class: ErrorClass = ErrorClass.PERMANENT


class EndOfStream(StreamError):
    """Raised by :meth:`Channel.get` once the channel is closed and drained (not a failure)."""

    default_hint = "the producer closed the channel; stop reading"


class ChannelClosedError(StreamError, RuntimeError):
    """``put`` on a channel that was already closed."""

    default_hint = "the pipeline is shutting down; stop producing"


class ConfigError(StreamError, ValueError):
    """A pipeline, windower or source option is invalid."""

    error_class = ErrorClass.INPUT
    default_hint = "fix the option; `ostinato run --help` lists the allowed values"


class InvalidAudioError(StreamError, ValueError):
    """Audio that cannot be processed: NaN/Inf samples, wrong dtype or shape, odd byte counts."""

    error_class = ErrorClass.INPUT
    default_hint = "send finite PCM samples in the declared format (s16le or f32le), rate and channel count"


class ProtocolError(StreamError, ValueError):
    """A wire-protocol frame is malformed, too large, of an unknown type or version."""

    error_class = ErrorClass.INPUT
    default_hint = "speak the ostinato wire protocol described in docs/protocol.md"


class SourceError(StreamError):
    """An audio source failed."""

    default_hint = "check the --source argument"


class SourceUnavailableError(SourceError, OSError):
    """A source cannot be opened at all (missing file, missing PortAudio, unknown device)."""

    default_hint = "check that the file or device exists; `ostinato devices` lists inputs"


class SourceConnectionError(SourceError, ConnectionError):
    """A network source lost or could not establish its connection (retried with backoff)."""

    error_class = ErrorClass.TRANSIENT
    default_hint = "the peer is unreachable or dropped the connection; ostinato reconnects with backoff"


class SourceTimeoutError(SourceError, TimeoutError):
    """A source delivered no audio within its timeout (retried with backoff)."""

    error_class = ErrorClass.TRANSIENT
    default_hint = "the audio feed stalled; check the sender, or raise the source timeout"


class SourceClosedError(SourceError, ConnectionError):
    """The peer ended the stream for good (a ``bye``/close frame with a permanent reason)."""

    default_hint = "the sender ended the stream; restart it on the sending side"


class InferenceError(StreamError, RuntimeError):
    """Running the model on a batch failed in a way that may pass (retried, then dropped)."""

    error_class = ErrorClass.TRANSIENT
    default_hint = "inference failed; if it persists run with --provider cpu or fewer --workers"


class BreakerOpenError(StreamError, RuntimeError):
    """A circuit breaker is open: calls fail fast until its cool-down ends."""

    error_class = ErrorClass.TRANSIENT
    default_hint = "a dependency failed repeatedly; ostinato probes it again after the cool-down"


class StageError(StreamError, RuntimeError):
    """A pipeline stage failed permanently; the run stops with this error."""

    default_hint = "see the chained error above for the cause"


def _runtime_class(exc: BaseException) -> ErrorClass | None:
    # Imported here so this module keeps no import-time dependency on the runtime layer.
    from ostinato.runtime import errors as rt

    if not isinstance(exc, rt.SessionError):
        return None
    if isinstance(exc, rt.InputError):
        return ErrorClass.INPUT
    if isinstance(
        exc, rt.ProviderUnavailableError | rt.ModelNotFoundError | rt.ModelLoadError | rt.ManifestError
    ):
        return ErrorClass.PERMANENT
    return ErrorClass.TRANSIENT


def classify_error(exc: BaseException) -> ErrorClass:
    """Classify any exception as ``input``, ``transient`` or ``permanent``.

    ostinato's own errors carry their class. Runtime errors: bad inputs are ``input``,
    load/provider errors ``permanent``, other session failures ``transient``. From the
    outside world: timeouts, connection errors and ``MemoryError`` are ``transient``.
    Everything else (programming errors included) is ``permanent`` so it fails loudly.

    Args:
        exc: The exception to classify.

    Returns:
        The :class:`ErrorClass`.
    """
    if isinstance(exc, StreamError):
        return exc.error_class
    runtime_class = _runtime_class(exc)
    if runtime_class is not None:
        return runtime_class
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | ConnectionError | MemoryError):
        return ErrorClass.TRANSIENT
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a runtime dependency
        return ErrorClass.PERMANENT
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ServerTimeoutError):
        return ErrorClass.TRANSIENT
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status >= 500:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT
