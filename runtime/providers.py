"""Execution-provider resolution and honest reporting of what actually loaded.

``onnxruntime-gpu`` lists CUDA/TensorRT in ``get_available_providers()`` even on a machine
without CUDA libraries; creating the CUDA provider then fails and ONNX Runtime silently runs
on CPU. So the request is never trusted: :func:`resolve_providers` builds the list to ask
for, and :class:`ostinato.runtime.session.Session` compares it with
``session.get_providers()`` after creation, logging and counting any fallback.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ostinato.runtime.errors import ProviderUnavailableError

__all__ = [
    "PROVIDER_CHOICES",
    "ProviderProbe",
    "Fallback",
    "fallbacks",
    "load_error",
    "probe_providers",
    "record_fallback",
    "resolve_providers",
]

logger = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# cuDNN's EXHAUSTIVE conv search re-tunes for every new input shape; streaming windows are
# fixed-shape but offline files are not, so HEURISTIC is the safe default (ANCHORS.md).
_CUDA_OPTIONS: dict[str, Any] = {"cudnn_conv_algo_search": "HEURISTIC"}

# A serialized one-node ONNX graph (Identity on float[1]), used to find out which providers
# really load here without needing the onnx package at runtime.
_PROBE_MODEL = base64.b64decode(
    "CAgSCG9zdGluYXRvOjsKEAoBeBIBeSIISWRlbnRpdHkSBXByb2JlWg8KAXgSCgoICAESBAoCCAFiDwoBeRIK"
    "CggIARIECgIIAUIECgAQDQ=="
)

ProviderList = list[tuple[str, dict[str, Any]]]


def resolve_providers(
    requested: str, available: Sequence[str] | None = None, *, device_id: int = 0
) -> ProviderList:
    """Turn a user choice into the provider list handed to ONNX Runtime.

    Args:
        requested: One of ``auto``, ``cpu``, ``cuda``, ``tensorrt``.
        available: Providers compiled into this onnxruntime build (default: ask onnxruntime).
        device_id: CUDA device index.

    Returns:
        ``(name, options)`` pairs, most preferred first; CPU is always last.

    Raises:
        ValueError: ``requested`` is not a known choice.
        ProviderUnavailableError: ``cuda``/``tensorrt`` was requested but this onnxruntime
            build does not include it at all (the CPU-only ``onnxruntime`` wheel).
    """
    if requested not in PROVIDER_CHOICES:
        raise ValueError(f"provider={requested!r}; expected one of {PROVIDER_CHOICES}")
    avail = list(available) if available is not None else ort.get_available_providers()
    cuda = (CUDA, {**_CUDA_OPTIONS, "device_id": device_id})
    cpu: tuple[str, dict[str, Any]] = (CPU, {})
    if requested == "cpu":
        return [cpu]
    if requested == "auto":
        return [cuda, cpu] if CUDA in avail else [cpu]
    wanted = [TENSORRT, CUDA] if requested == "tensorrt" else [CUDA]
    missing = [p for p in wanted if p not in avail]
    if missing:
        raise ProviderUnavailableError(
            f"provider={requested!r} needs {missing}, which this onnxruntime build lacks "
            f"(onnxruntime {ort.__version__} offers {avail})",
            hint="on x86_64 Linux install onnxruntime-gpu (pip install onnxruntime-gpu), "
            "or run with --provider cpu",
        )
    trt = [(TENSORRT, {"device_id": device_id})] if requested == "tensorrt" else []
    return [*trt, cuda, cpu]


@dataclasses.dataclass(frozen=True, slots=True)
class Fallback:
    """One provider request that did not get what it asked for."""

    requested: str
    wanted: tuple[str, ...]
    got: tuple[str, ...]
    reason: str


_fallbacks: list[Fallback] = []
_fallbacks_lock = threading.Lock()
_MAX_FALLBACK_RECORDS = 32


def record_fallback(fallback: Fallback) -> None:
    """Remember a fallback for ``ostinato doctor`` / health (bounded), count it, log it once."""
    from ostinato.runtime.metrics import PROVIDER_FALLBACKS

    PROVIDER_FALLBACKS.labels(requested=fallback.requested, used=fallback.got[0]).inc()
    with _fallbacks_lock:
        first = all(f.wanted != fallback.wanted for f in _fallbacks)
        if len(_fallbacks) < _MAX_FALLBACK_RECORDS:
            _fallbacks.append(fallback)
    log = logger.warning if first else logger.debug
    log(
        "provider %r: wanted %s but ONNX Runtime loaded %s; running on CPU. Reason: %s",
        fallback.requested,
        list(fallback.wanted),
        list(fallback.got),
        fallback.reason,
    )


def fallbacks() -> list[Fallback]:
    """Return the provider fallbacks seen in this process (oldest first)."""
    with _fallbacks_lock:
        return list(_fallbacks)


_PROVIDER_LIBS = {CUDA: "cuda", TENSORRT: "tensorrt"}


def load_error(provider: str) -> str | None:
    """Explain why a provider's library cannot load, or ``None`` if it can (CPU always can).

    ``dlopen`` of ``libonnxruntime_providers_cuda.so`` names the first missing dependency
    (e.g. ``libcublasLt.so.13``), which is the actionable part of the failure.
    """
    if provider not in _PROVIDER_LIBS:
        return None
    lib = Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{_PROVIDER_LIBS[provider]}.so"
    if not lib.exists():
        return f"{lib.name} is not part of this onnxruntime build"
    try:
        ctypes.CDLL(str(lib))
    except OSError as e:
        return str(e)
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderProbe:
    """Providers compiled in vs. providers that actually create a session here."""

    available: tuple[str, ...]
    loadable: tuple[str, ...]
    errors: dict[str, str]


def probe_providers() -> ProviderProbe:
    """Create a one-node session per compiled-in provider and report which really load."""
    available = tuple(ort.get_available_providers())
    loadable: list[str] = []
    errors: dict[str, str] = {}
    for name in available:
        if name in _PROVIDER_LIBS and (reason := load_error(name)) is not None:
            errors[name] = reason  # creating a session would only print ORT's own noise
            continue
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            opts = _CUDA_OPTIONS if name == CUDA else {}
            chain = [CPU] if name == CPU else [(name, opts), CPU]
            session = ort.InferenceSession(_PROBE_MODEL, options, providers=chain)
            got = session.get_providers()
        except Exception as e:  # noqa: BLE001 - any failure means "not loadable", reported below
            errors[name] = str(e)
            continue
        if name in got:
            loadable.append(name)
        else:
            errors[name] = "session created without it (see onnxruntime log)"
    return ProviderProbe(available, tuple(loadable), errors)
