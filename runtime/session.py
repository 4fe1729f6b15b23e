"""A thin, honest wrapper around ``onnxruntime.InferenceSession``.

:class:`Session` adds what every caller otherwise repeats: provider resolution with a
visible CPU fallback, thread settings, named I/O with dtype and rank checks that fail with
clear messages, typed load errors for missing or damaged files, and a latency metric.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from ostinato.runtime import providers as _providers
from ostinato.runtime._closing import Closing
from ostinato.runtime.errors import (
    InputError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderUnavailableError,
    SessionError,
)
from ostinato.runtime.metrics import SESSION_RUN_ERRORS, SESSION_RUN_SECONDS, SESSIONS_LOADED

__all__ = ["Session", "SessionConfig", "InferenceError"]

logger = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_ORT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(bool)": np.dtype(np.bool_),
}


class InferenceError(SessionError, RuntimeError):
    """``session.run`` failed for a reason other than bad input."""

    default_hint = "check the model with ostinato doctor; re-export it if the problem persists"


@dataclasses.dataclass(frozen=True, slots=True)
class SessionConfig:
    """How to create a session.

    Args:
        provider: ``auto`` (CUDA if it loads, else CPU), ``cpu``, ``cuda`` or ``tensorrt``.
        intra_op_threads: Threads inside one operator; 0 lets ONNX Runtime choose.
        inter_op_threads: Threads across independent operators (1 = sequential execution).
        allow_fallback: When an accelerator was asked for and does not load, run on CPU
            (logged, counted, shown by ``ostinato doctor``) instead of raising.
        graph_optimization: ``disable``, ``basic``, ``extended`` or ``all``.
        device_id: CUDA device index.
        name: Label for metrics and logs.
        allow_spinning: Let idle pool threads spin (busy-wait) for the next operator instead
            of sleeping. Off by default: on a shared or small CPU the spinning threads take
            the cores from the pipeline's other threads (random:base int8 encoder, 2 threads,
            loaded 2-core machine: 1.2-1.8x the wall time and 1.1-1.25x the CPU time of
            non-spinning; ``bench/RESULTS.md``). One-thread sessions have no pool.
    """

    provider: str = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    allow_fallback: bool = True
    graph_optimization: str = "all"
    device_id: int = 0
    name: str = "model"
    allow_spinning: bool = False

    def __post_init__(self) -> None:
        if self.provider not in _providers.PROVIDER_CHOICES:
            raise ValueError(
                f"provider={self.provider!r}; expected one of {_providers.PROVIDER_CHOICES}"
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError(
                f"intra_op_threads={self.intra_op_threads}, inter_op_threads="
                f"{self.inter_op_threads}; expected integers >= 0"
            )
        if self.graph_optimization not in _OPT_LEVELS:
            raise ValueError(
                f"graph_optimization={self.graph_optimization!r}; expected one of "
                f"{tuple(_OPT_LEVELS)}"
            )

    def session_options(self) -> ort.SessionOptions:
        """Build the ``onnxruntime.SessionOptions`` for this config."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if self.inter_op_threads > 1
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.graph_optimization_level = _OPT_LEVELS[self.graph_optimization]
        spin = "1" if self.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return options


class Session(Closing):
    """One loaded ONNX graph. Thread-safe: ``run`` may be called from several threads.

    Build with :meth:`from_path`. Attributes: ``providers`` (what actually loaded),
    ``fell_back`` (an accelerator was wanted and CPU is used), ``input_names``,
    ``output_names``.
    """

    def __init__(
        self,
        inner: ort.InferenceSession,
        config: SessionConfig,
        path: Path,
        wanted: tuple[str, ...] = (),
    ) -> None:
        self._inner: ort.InferenceSession | None = inner
        self.config = config
        self.path = path
        self.providers: tuple[str, ...] = tuple(inner.get_providers())
        self.fell_back = bool(wanted) and wanted[0] not in self.providers
        self._inputs = {i.name: i for i in inner.get_inputs()}
        self.input_names: tuple[str, ...] = tuple(self._inputs)
        self.output_names: tuple[str, ...] = tuple(o.name for o in inner.get_outputs())
        SESSIONS_LOADED.labels(provider=self.providers[0]).inc()

    @classmethod
    def from_path(cls, path: str | Path, config: SessionConfig | None = None) -> Session:
        """Load an ONNX file.

        Raises:
            ModelNotFoundError: ``path`` does not exist.
            ModelLoadError: ONNX Runtime cannot parse or initialise the graph.
            ProviderUnavailableError: An accelerator was required (``allow_fallback=False``)
                and did not load, or is not part of this onnxruntime build.
        """
        config = config or SessionConfig()
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"ONNX file {str(path)!r} does not exist")
        provider_list = _providers.resolve_providers(config.provider, device_id=config.device_id)
        wanted = tuple(p for p, _ in provider_list)
        # Leave out accelerators whose libraries cannot load: asking ORT for them only
        # produces its own multi-line error; the fallback is reported once, by us, below.
        usable = [(p, o) for p, o in provider_list if _providers.load_error(p) is None]
        try:
            inner = ort.InferenceSession(str(path), config.session_options(), providers=usable)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types
            raise ModelLoadError(f"cannot load {str(path)!r}: {_first_line(e)}") from e
        session = cls(inner, config, path, wanted)
        if session.fell_back:
            session._handle_fallback(wanted)
        logger.info("loaded %s on %s", path.name, list(session.providers))
        return session

    def _handle_fallback(self, wanted: tuple[str, ...]) -> None:
        reason = _providers.load_error(wanted[0]) or "the provider did not initialise"
        fallback = _providers.Fallback(self.config.provider, wanted, self.providers, reason)
        if self.config.provider != "auto" and not self.config.allow_fallback:
            self.close()
            raise ProviderUnavailableError(
                f"provider={self.config.provider!r} requested but ONNX Runtime loaded "
                f"{list(self.providers)}: {reason}"
            )
        _providers.record_fallback(fallback)

    @property
    def inner(self) -> ort.InferenceSession:
        """The wrapped ``InferenceSession``; raises if the session was closed."""
        if self._inner is None:
            raise SessionError(
                f"session for {self.path.name!r} is closed", hint="load the model again"
            )
        return self._inner

    def input_shape(self, name: str) -> list[int | str | None]:
        """Return the declared shape of input ``name`` (symbolic axes as strings)."""
        return list(self._inputs[name].shape)

    def run(
        self,
        feeds: dict[str, npt.NDArray[Any]],
        output_names: list[str] | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Run the graph.

        Args:
            feeds: Input name → array; names, dtypes and ranks must match the graph.
            output_names: Outputs to compute (default: all).

        Returns:
            Output name → array.

        Raises:
            InputError: Missing/unknown inputs, wrong dtype or rank, or ORT rejects a shape.
            InferenceError: ONNX Runtime failed while running.
        """
        inner = self.inner
        self._check_feeds(feeds)
        names = output_names or list(self.output_names)
        started = time.perf_counter()
        try:
            values = inner.run(names, feeds)
        except Exception as e:  # noqa: BLE001 - classified below
            SESSION_RUN_ERRORS.labels(model=self.config.name, error=type(e).__name__).inc()
            if type(e).__name__ in ("InvalidArgument", "InvalidGraph"):
                raise InputError(f"{self.path.name}: {_first_line(e)}") from e
            raise InferenceError(f"{self.path.name}: {_first_line(e)}") from e
        SESSION_RUN_SECONDS.labels(model=self.config.name).observe(time.perf_counter() - started)
        return dict(zip(names, values, strict=True))

    def _check_feeds(self, feeds: dict[str, npt.NDArray[Any]]) -> None:
        missing = sorted(set(self.input_names) - set(feeds))
        unknown = sorted(set(feeds) - set(self.input_names))
        if missing or unknown:
            raise InputError(
                f"inputs missing {missing}, unknown {unknown}; the graph takes {list(self.input_names)}"
            )
        for name, value in feeds.items():
            meta = self._inputs[name]
            expected = _ORT_DTYPES.get(meta.type)
            if expected is not None and value.dtype != expected:
                raise InputError(f"input {name!r} has dtype {value.dtype}; expected {expected}")
            if len(meta.shape) != value.ndim:
                raise InputError(
                    f"input {name!r} has shape {value.shape}; expected rank {len(meta.shape)} "
                    f"({meta.shape})"
                )

    def close(self) -> None:
        """Release the session. Idempotent."""
        if self._inner is not None:
            SESSIONS_LOADED.labels(provider=self.providers[0]).dec()
            self._inner = None


    def __del__(self) -> None:
        if getattr(self, "_inner", None) is not None:
            warnings.warn(
                f"Session for {self.path.name!r} was not closed", ResourceWarning, stacklevel=2
            )
            self.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
