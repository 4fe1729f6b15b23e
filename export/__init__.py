"""Export of Wav2Vec2 and GAMA to ONNX, validated against PyTorch.

Needs the ``export`` extra (torch, transformers, optimum-onnx); nothing in
:mod:`ostinato.stream` or :mod:`ostinato.runtime` imports this package.
"""

from ostinato.export.errors import (
    ExportError,
    MemoryBudgetError,
    ShapeMismatchError,
    SourceModelError,
    ToleranceError,
    UnsupportedArchitectureError,
)

__all__ = [
    "ExportError",
    "MemoryBudgetError",
    "ShapeMismatchError",
    "SourceModelError",
    "ToleranceError",
    "UnsupportedArchitectureError",
]
