"""The model manifest, ``ostinato.json``, written by the exporter beside ``model.onnx``.

One schema serves every model kind: common fields are typed attributes, kind-specific
details live in ``extra``. The exporter writes it with :meth:`Manifest.write`; the runtime
reads it with :meth:`Manifest.read`, which refuses manifests from a newer format.
See ``docs/manifest.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from ostinato.runtime.errors import ManifestError, ModelNotFoundError

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "OutputSpec", "sha256_file"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "ostinato.json"
_KINDS = ("wav2vec2", "gama")


@dataclasses.dataclass(frozen=True, slots=True)
class OutputSpec:
    """One named graph output.

    Args:
        name: ONNX output name.
        layer: Transformer layer the output comes from (0 = after the feature projection,
            ``num_layers`` = last), or ``None`` for outputs that are not hidden states
            (e.g. CTC logits).
        dim: Size of the last axis.
    """

    name: str
    layer: int | None
    dim: int


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """Everything the runtime needs to know about an exported model.

    Attributes mirror the JSON keys one to one (see ``docs/manifest.md``).
    """

    kind: str
    task: str
    source: str
    random_init: bool
    precision: str
    opset: int
    files: dict[str, str]
    outputs: tuple[OutputSpec, ...] = ()
    sample_rate: int = 16000
    frame_stride_samples: int = 320
    receptive_field_samples: int = 400
    hidden_size: int = 0
    num_layers: int = 0
    normalize_input: bool = False
    feat_extract_norm: str = "layer"
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ManifestError(f"kind={self.kind!r}; expected one of {_KINDS}")
        if self.sample_rate <= 0:
            raise ManifestError(f"sample_rate={self.sample_rate}; expected a positive integer")
        if "model" not in self.files and self.kind == "wav2vec2":
            raise ManifestError("files has no 'model' entry; expected the ONNX file name")

    @property
    def label(self) -> str:
        """A one-line description users see; random weights are always called out."""
        weights = "RANDOM WEIGHTS (not trained)" if self.random_init else "trained weights"
        return f"{self.kind} {self.task} {self.precision} from {self.source} [{weights}]"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready dictionary."""
        out = dataclasses.asdict(self)
        out["outputs"] = [dataclasses.asdict(o) for o in self.outputs]
        return out

    def write(self, directory: str | Path) -> Path:
        """Write ``ostinato.json`` into ``directory`` and return its path."""
        path = Path(directory) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build a manifest from parsed JSON, refusing newer formats and unknown shapes."""
        version = data.get("format_version")
        if not isinstance(version, int):
            raise ManifestError(f"format_version={version!r}; expected an integer")
        if version > FORMAT_VERSION:
            raise ManifestError(
                f"manifest format_version={version} is newer than this ostinato supports "
                f"({FORMAT_VERSION})",
                hint="upgrade ostinato (pip install -U ostinato) or re-export with this version",
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            logger.warning("manifest has fields this version does not know: %s", unknown)
        kwargs = {k: v for k, v in data.items() if k in fields}
        try:
            kwargs["outputs"] = tuple(OutputSpec(**o) for o in data.get("outputs", ()))
            return cls(**kwargs)
        except TypeError as e:
            raise ManifestError(f"manifest is malformed: {e}") from e

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """Read ``ostinato.json`` from a model directory.

        Raises:
            ModelNotFoundError: The directory or manifest does not exist.
            ManifestError: The manifest is not valid JSON or not a valid manifest.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelNotFoundError(f"model directory {str(directory)!r} does not exist")
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise ModelNotFoundError(
                f"{str(path)!r} not found: {str(directory)!r} is not an exported ostinato model"
            )
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{str(path)!r} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ManifestError(f"{str(path)!r} holds {type(data).__name__}; expected an object")
        return cls.from_dict(data)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
