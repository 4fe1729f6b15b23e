"""ONNX Runtime layer: sessions, providers, model wrappers. Needs only onnxruntime and numpy."""

from ostinato.runtime.errors import (
    InputError,
    ManifestError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderUnavailableError,
    SessionError,
)
from ostinato.runtime.features import Features, num_frames
from ostinato.runtime.gama import GamaModel
from ostinato.runtime.generate import GenerationConfig
from ostinato.runtime.manifest import Manifest, OutputSpec
from ostinato.runtime.providers import probe_providers, resolve_providers
from ostinato.runtime.registry import load_model, model_class_for
from ostinato.runtime.session import InferenceError, Session, SessionConfig
from ostinato.runtime.wav2vec2 import Wav2Vec2Model

__all__ = [
    "Features",
    "GamaModel",
    "GenerationConfig",
    "InferenceError",
    "InputError",
    "Manifest",
    "ManifestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutputSpec",
    "ProviderUnavailableError",
    "Session",
    "SessionConfig",
    "SessionError",
    "Wav2Vec2Model",
    "load_model",
    "model_class_for",
    "num_frames",
    "probe_providers",
    "resolve_providers",
]
