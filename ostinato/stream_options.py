"""What a stream asks for in its ``hello``: outputs and ``options``, validated."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ostinato.stream.errors import ProtocolError
from ostinato.stream.wire import Hello

__all__ = ["SessionOptions"]


@dataclasses.dataclass(frozen=True, slots=True)
class SessionOptions:
    """What a stream asked for in ``hello`` (validated by :meth:`from_hello`).

    Args:
        outputs: Subset of ``events``, ``features``, ``status``.
        overflow: Input queue policy.
        match: Run the recurring-pattern matcher.
        match_features: ``logmel`` (model-free, default) or ``model`` (the streamed output).
        features_every: Send every n-th feature frame (``features_hz`` chosen by the client).
        features_dtype: ``f32`` or ``f16``.
        file: Server-side media file to play instead of client audio (dashboard).
        status_interval_s: Period of ``status`` frames.
    """

    outputs: frozenset[str] = frozenset({"events", "status"})
    overflow: str = "block"
    match: bool = True
    match_features: str = "logmel"
    features_every: int = 1
    features_dtype: str = "f32"
    file: str = ""
    status_interval_s: float = 1.0

    @classmethod
    def from_hello(cls, hello: Hello, default_overflow: str, default_status_s: float) -> SessionOptions:
        """Validate ``hello.outputs`` and ``hello.options``.

        Raises:
            ProtocolError: Naming the bad option and the allowed values.
        """
        outputs = frozenset(hello.outputs)
        if not outputs <= {"events", "features", "status"}:
            raise ProtocolError(f"hello.outputs={sorted(outputs)}; expected a subset of ['events', 'features', 'status']")
        o = hello.options
        allowed = {"model", "overflow", "match", "match_features", "features_hz", "features_dtype", "file",
                   "status_interval_s", "resume_token"}
        unknown = sorted(set(o) - allowed)
        if unknown:
            raise ProtocolError(f"hello.options has unknown keys {unknown}; expected some of {sorted(allowed)}")

        def pick(key: str, kinds: tuple[type, ...], default: Any, ok: Any, expected: str) -> Any:
            value = o.get(key, default)
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds) or not ok(value):
                raise ProtocolError(f"hello.options.{key}={value!r}; expected {expected}")
            return value

        features_hz = pick("features_hz", (int, float), 50.0, lambda v: math.isfinite(v) and 0 < v <= 50, "0 < Hz <= 50")
        return cls(
            outputs=outputs,
            overflow=pick("overflow", (str,), default_overflow, lambda v: v in ("block", "drop_oldest", "drop_newest"),
                          "block, drop_oldest or drop_newest"),
            match=pick("match", (bool,), "events" in outputs, lambda v: True, "true or false"),
            match_features=pick("match_features", (str,), "logmel", lambda v: v in ("logmel", "model"), "logmel or model"),
            features_every=max(1, round(50.0 / features_hz)),
            features_dtype=pick("features_dtype", (str,), "f32", lambda v: v in ("f32", "f16"), "f32 or f16"),
            file=pick("file", (str,), "", lambda v: len(v) <= 255, "a file name from GET /v1/media"),
            status_interval_s=pick("status_interval_s", (int, float), default_status_s,
                                   lambda v: math.isfinite(v) and 0.1 <= v <= 60, "0.1 .. 60 seconds"),
        )

    @property
    def needs_model(self) -> bool:
        """Whether windows go through the model (features wanted, or matching on them)."""
        return "features" in self.outputs or (self.match and self.match_features == "model")
