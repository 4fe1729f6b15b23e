"""Errors raised by :mod:`ostinato.export`."""

from __future__ import annotations

from ostinato.runtime.errors import HintedError

__all__ = [
    "ExportError",
    "SourceModelError",
    "UnsupportedArchitectureError",
    "ShapeMismatchError",
    "ToleranceError",
    "MemoryBudgetError",
    "CheckpointMismatchError",
    "ExportOptionError",
]


class ExportError(HintedError):
    """Base of every export error; ``hint`` says what the user can do."""


class SourceModelError(ExportError, FileNotFoundError):
    """The source model directory is missing, incomplete or unreadable."""

    default_hint = (
        "pass a directory written by save_pretrained (config.json + model.safetensors or "
        "pytorch_model.bin), or random:base|random:large|random:tiny"
    )


class UnsupportedArchitectureError(ExportError, ValueError):
    """The source config names an architecture this exporter does not handle."""

    default_hint = "ostinato exports Wav2Vec2 (model_type 'wav2vec2') and GAMA checkpoints"


class ShapeMismatchError(ExportError, ValueError):
    """ONNX Runtime and PyTorch outputs differ in shape."""


class ToleranceError(ExportError, ValueError):
    """ONNX Runtime and PyTorch outputs differ beyond the allowed tolerance."""

    default_hint = "report the figures in an issue, or pass --no-validate to keep the model anyway"


class MemoryBudgetError(ExportError, MemoryError):
    """The export would need more memory than this machine has."""


class CheckpointMismatchError(ExportError, ValueError):
    """A checkpoint's keys or shapes do not match the model: missing or unexplained tensors."""

    default_hint = (
        "pass the base folder and the stage checkpoint of the same release; the message lists "
        "every missing and unexpected key"
    )


class ExportOptionError(ExportError, ValueError):
    """An export option has a value outside what is allowed (the message names both)."""

    default_hint = "see `ostinato export --help` for the allowed values"
