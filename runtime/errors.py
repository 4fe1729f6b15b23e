"""Errors raised by :mod:`ostinato.runtime`.

Every error has a single base, :class:`SessionError`, and also inherits the builtin it
resembles, so callers can catch either. Each carries a ``hint``: what the user can do.
"""

from __future__ import annotations

__all__ = [
    "HintedError",
    "SessionError",
    "ModelNotFoundError",
    "ModelLoadError",
    "ManifestError",
    "ProviderUnavailableError",
    "InputError",
]


class HintedError(Exception):
    """Root of ostinato's error trees (runtime, export, stream, service): a message plus a hint.

    Args:
        message: What went wrong, with the offending value.
        hint: What to do about it (shown to users by the CLI and the service); defaults to
            the class's ``default_hint``.
    """

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (hint: {self.hint})" if self.hint else base

    @property
    def message(self) -> str:
        """The message without the hint."""
        return super().__str__()


class SessionError(HintedError):
    """Base of every runtime error."""


class ModelNotFoundError(SessionError, FileNotFoundError):
    """A model directory, manifest or ONNX file does not exist."""

    default_hint = "export a model first: ostinato export wav2vec2 --model random:base --out DIR"


class ModelLoadError(SessionError, RuntimeError):
    """An ONNX file exists but ONNX Runtime cannot load it (truncated, corrupted, wrong opset)."""

    default_hint = "the file is damaged or incompatible: export it again with ostinato export"


class ManifestError(SessionError, ValueError):
    """``ostinato.json`` is missing fields, malformed, or from a newer format."""

    default_hint = "re-export the model with this version of ostinato"


class ProviderUnavailableError(SessionError, RuntimeError):
    """A requested execution provider is not available and fallback was not allowed."""

    default_hint = (
        "install the CUDA/cuDNN libraries this onnxruntime-gpu build needs (the missing one is "
        "named in the message) or run with --provider cpu"
    )


class InputError(SessionError, ValueError):
    """Audio or tensors handed to a model are invalid (rate, dims, dtype, NaN/Inf)."""

    default_hint = "send finite float32 mono audio at the model's sample rate"
