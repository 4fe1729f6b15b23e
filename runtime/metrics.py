"""Prometheus metrics of the runtime layer.

The style guide puts every metric in ``stream/metrics.py``, but ``runtime`` must not import
``stream`` (dependencies flow stream → runtime), so the few runtime metrics live here and
``stream.metrics`` re-exports them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["PROVIDER_FALLBACKS", "SESSIONS_LOADED", "SESSION_RUN_SECONDS", "SESSION_RUN_ERRORS"]

PROVIDER_FALLBACKS = Counter(
    "ostinato_runtime_provider_fallbacks_total",
    "Sessions that asked for an accelerator provider and got another (usually CPU)",
    ["requested", "used"],
)
SESSIONS_LOADED = Gauge(
    "ostinato_runtime_sessions_loaded",
    "ONNX Runtime sessions currently loaded, by provider in use",
    ["provider"],
)
SESSION_RUN_SECONDS = Histogram(
    "ostinato_runtime_session_run_seconds",
    "Wall time of one session.run call",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SESSION_RUN_ERRORS = Counter(
    "ostinato_runtime_session_run_errors_total",
    "session.run calls that raised, by error type",
    ["model", "error"],
)
