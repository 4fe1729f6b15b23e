"""Model configurations the service accepts (``POST /v1/models``) and their validation.

A configuration is JSON. Every field is checked for name, type and range; the first bad one
raises :class:`~ostinato.errors.ModelConfigError` naming it with a dotted path, which the
service returns as HTTP 422::

    {"name": "wav2vec2-base", "version": "2.0.0", "model_dir": "/models/base-int8",
     "provider": "auto",
     "parameters": {"attentionDropout": 0.1, "hiddenDropout": 0.1},
     "streaming": {"chunk_samples": 1600, "overlap_samples": 400, "max_queue": 10,
                   "batch_size": 4, "max_wait_ms": 20, "output": "last_hidden_state"}}

``parameters`` holds training-time hyper-parameters some configs carry. Dropout is only
active while training, so ostinato validates the values (each in [0, 1)) and ignores them at
inference. ``streaming`` holds the stream settings of this model; the defaults are the seed
configuration (1600-sample chunks, 400-sample overlap, queue 10, batch 4).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from ostinato.errors import ModelConfigError
from ostinato.stream.channel import OVERFLOW_POLICIES
from ostinato.stream.errors import ConfigError
from ostinato.stream.windowing import WindowerConfig

__all__ = ["DROPOUT_PARAMETERS", "PROVIDERS", "ModelConfig", "StreamingConfig"]

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
#: Accepted ``parameters`` keys: validated in [0, 1), ignored at inference (dropout is off).
DROPOUT_PARAMETERS = (
    "attentionDropout", "hiddenDropout", "activationDropout", "featProjDropout", "layerDrop", "finalDropout",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.-]+)?$")
_TOP_FIELDS = ("name", "version", "model_dir", "path", "provider", "intra_op_threads", "parameters", "streaming")


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__.replace("str", "string").replace("int", "integer") for k in kinds)
        raise ModelConfigError(path, f"got {type(value).__name__} {_short(value)}; expected {names}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(obj: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ModelConfigError(f"{prefix}{key}", f"unknown field; expected one of {list(allowed)}")


@dataclasses.dataclass(frozen=True, slots=True)
class StreamingConfig:
    """How streams on this model are windowed, queued and batched.

    Args:
        chunk_samples: New audio per window (hop), a multiple of 320 (the frame stride).
        overlap_samples: Samples consecutive windows share: 80 + a multiple of 320.
        max_queue: Capacity of each stream's input queue (audio blocks) and window queue.
        batch_size: Windows run together in one inference call (across streams).
        max_wait_ms: Longest a window waits for a batch to fill.
        output: Model output to stream (``""``: the model's default).
        overflow: What a full stream queue does: ``block`` (stop reading the socket),
            ``drop_oldest`` or ``drop_newest``; a stream's ``hello`` may choose another.
        max_lag_s: Windows older than this are dropped and counted instead of building lag.
    """

    chunk_samples: int = 1600
    overlap_samples: int = 400
    max_queue: int = 10
    batch_size: int = 4
    max_wait_ms: float = 20.0
    output: str = ""
    overflow: str = "block"
    max_lag_s: float = 5.0

    def __post_init__(self) -> None:
        try:
            self.windower_config()
        except ConfigError as e:
            field = "streaming.overlap_samples" if "overlap" in str(e) else "streaming.chunk_samples"
            raise ModelConfigError(field, str(e).split(" (hint:")[0]) from e
        if not 1 <= self.max_queue <= 10_000:
            raise ModelConfigError("streaming.max_queue", f"{self.max_queue}; expected 1..10000")
        if not 1 <= self.batch_size <= 256:
            raise ModelConfigError("streaming.batch_size", f"{self.batch_size}; expected 1..256")
        if not 0 <= self.max_wait_ms <= 10_000 or not math.isfinite(self.max_wait_ms):
            raise ModelConfigError("streaming.max_wait_ms", f"{self.max_wait_ms}; expected 0..10000 ms")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ModelConfigError("streaming.overflow", f"{self.overflow!r}; expected one of {list(OVERFLOW_POLICIES)}")
        if not 0 < self.max_lag_s <= 3600 or not math.isfinite(self.max_lag_s):
            raise ModelConfigError("streaming.max_lag_s", f"{self.max_lag_s}; expected 0 < seconds <= 3600")

    def windower_config(self) -> WindowerConfig:
        """The :class:`~ostinato.stream.windowing.WindowerConfig` this chunk/overlap pair means.

        Raises:
            ConfigError: If the pair cannot be expressed with 320-sample frames.
        """
        return WindowerConfig.from_chunk_overlap(self.chunk_samples, self.overlap_samples)

    @classmethod
    def from_json(cls, obj: Any) -> StreamingConfig:
        """Validate the ``streaming`` object of a model config.

        Raises:
            ModelConfigError: Naming the first bad field.
        """
        if not isinstance(obj, dict):
            raise ModelConfigError("streaming", f"got {type(obj).__name__}; expected an object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        _check_keys(obj, tuple(fields), "streaming.")
        kwargs: dict[str, Any] = {}
        for key in obj:
            default = fields[key].default
            kind: type | tuple[type, ...] = (int, float) if isinstance(default, float) else type(default)
            kwargs[key] = _require(obj, key, kind, f"streaming.{key}")
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelConfig:
    """A validated model configuration.

    Args:
        name: Model name used in URLs and ``hello`` (letters, digits, ``._-``, at most 64).
        model_dir: Directory written by ``ostinato export`` (holds ``ostinato.json``).
        version: Free version label (``2.0.0``); informational.
        provider: ``auto``, ``cpu``, ``cuda`` or ``tensorrt``.
        intra_op_threads: Threads per operator (0: ONNX Runtime decides).
        parameters: Training hyper-parameters (validated, ignored at inference).
        streaming: Stream settings.
    """

    name: str
    model_dir: Path
    version: str = ""
    provider: str = "auto"
    intra_op_threads: int = 0
    parameters: tuple[tuple[str, float], ...] = ()
    streaming: StreamingConfig = StreamingConfig()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ModelConfigError("name", f"{self.name!r}; expected 1-64 of A-Z a-z 0-9 . _ - starting alphanumeric")
        if self.version and not _VERSION_RE.match(self.version):
            raise ModelConfigError("version", f"{self.version!r}; expected a version like 2.0.0")
        if self.provider not in PROVIDERS:
            raise ModelConfigError("provider", f"{self.provider!r}; expected one of {list(PROVIDERS)}")
        if not 0 <= self.intra_op_threads <= 256:
            raise ModelConfigError("intra_op_threads", f"{self.intra_op_threads}; expected 0..256")
        if not (self.model_dir / "ostinato.json").is_file():
            raise ModelConfigError(
                "model_dir", f"{str(self.model_dir)!r} holds no ostinato.json",
                hint="point it at a directory written by `ostinato export` (on the server's file system)",
            )
        for key, value in self.parameters:
            if key not in DROPOUT_PARAMETERS:
                raise ModelConfigError(f"parameters.{key}", f"unknown parameter; expected one of {list(DROPOUT_PARAMETERS)}")
            if not math.isfinite(value) or not 0.0 <= value < 1.0:
                raise ModelConfigError(f"parameters.{key}", f"{value!r}; expected a probability in [0, 1)")

    @classmethod
    def from_json(cls, obj: Any) -> ModelConfig:
        """Validate a JSON model configuration.

        Args:
            obj: The decoded JSON body.

        Returns:
            The config.

        Raises:
            ModelConfigError: Naming the first bad field (``name``, ``model_dir``,
                ``parameters.hiddenDropout``, ``streaming.batch_size``…).
        """
        if not isinstance(obj, dict):
            raise ModelConfigError("(body)", f"got {type(obj).__name__}; expected a JSON object")
        _check_keys(obj, _TOP_FIELDS, "")
        if "name" not in obj:
            raise ModelConfigError("name", "required field is missing")
        if ("model_dir" in obj) == ("path" in obj):
            raise ModelConfigError("model_dir", "give exactly one of model_dir or path (its alias)")
        key = "model_dir" if "model_dir" in obj else "path"
        model_dir = _require(obj, key, str, key)
        kwargs: dict[str, Any] = {"name": _require(obj, "name", str, "name"), "model_dir": Path(model_dir)}
        for field, kind in (("version", str), ("provider", str), ("intra_op_threads", int)):
            if field in obj:
                kwargs[field] = _require(obj, field, kind, field)
        if "parameters" in obj:
            params = _require(obj, "parameters", dict, "parameters")
            kwargs["parameters"] = tuple(
                (k, float(_require(params, k, (int, float), f"parameters.{k}"))) for k in params
            )
        if "streaming" in obj:
            kwargs["streaming"] = StreamingConfig.from_json(obj["streaming"])
        try:
            return cls(**kwargs)
        except ModelConfigError as e:
            if e.field == "model_dir" and key == "path":
                raise ModelConfigError("path", e.reason, hint=e.hint) from e
            raise

    def to_json(self) -> dict[str, Any]:
        """The configuration as JSON (what ``GET /v1/models`` shows)."""
        return {
            "name": self.name,
            "version": self.version,
            "model_dir": str(self.model_dir),
            "provider": self.provider,
            "intra_op_threads": self.intra_op_threads,
            "parameters": dict(self.parameters),
            "streaming": dataclasses.asdict(self.streaming),
        }
