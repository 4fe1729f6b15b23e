"""Map a manifest's ``kind`` to the class that runs it (two functions, no factory class)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ostinato.runtime.errors import ManifestError
from ostinato.runtime.manifest import Manifest

__all__ = ["model_class_for", "load_model"]

# kind -> "module:Class"; imported on demand so loading a Wav2Vec2 model never imports GAMA.
_CLASSES = {
    "wav2vec2": "ostinato.runtime.wav2vec2:Wav2Vec2Model",
    "gama": "ostinato.runtime.gama:GamaModel",
}


def model_class_for(kind: str) -> type[Any]:
    """Return the class that runs models of ``kind``.

    Raises:
        ManifestError: ``kind`` is unknown.
    """
    try:
        module_name, class_name = _CLASSES[kind].split(":")
    except KeyError:
        raise ManifestError(f"model kind {kind!r} is unknown; expected one of {sorted(_CLASSES)}") from None
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def load_model(directory: str | Path, **kwargs: Any) -> Any:
    """Load any exported model directory with the class its manifest names.

    Keyword arguments go to that class's ``from_dir`` (e.g. ``provider="cpu"``).
    """
    manifest = Manifest.read(directory)
    return model_class_for(manifest.kind).from_dir(directory, **kwargs)
