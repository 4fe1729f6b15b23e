"""ONNX Runtime layer: sessions, providers, model wrappers. Needs only onnxruntime and numpy."""

from ostinato.runtime.errors import (
    InputError,
    ManifestError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderUnavailableError,
    SessionError,
)
from ostinato.runtime.manifest import Manifest, OutputSpec

__all__ = [
    "InputError",
    "Manifest",
    "ManifestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutputSpec",
    "ProviderUnavailableError",
    "SessionError",
]
