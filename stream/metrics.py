"""Every Prometheus metric of the streaming pipeline, in one place.

Metrics live on a :class:`StreamMetrics` object bound to a ``CollectorRegistry``, never on
module globals, so tests build a fresh registry and read values back with
``registry.get_sample_value(name, labels)``, and a server exposes its registry with
``prometheus_client.generate_latest(registry)``. Names follow
``ostinato_<area>_<thing>_<unit>[_total]`` in base units (seconds, bytes).

Labels stay low-cardinality: channel and stage names, reasons, error classes; never a
stream id (a server may see millions of them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The runtime layer cannot import stream (dependencies flow stream -> runtime), so its few
# process-wide metrics live in runtime/metrics.py, on the default registry; listed here so
# this module stays the one place to look.
from ostinato.runtime.metrics import (
    PROVIDER_FALLBACKS,
    SESSION_RUN_ERRORS,
    SESSION_RUN_SECONDS,
    SESSIONS_LOADED,
)

__all__ = [
    "BREAKER_STATE_VALUES",
    "HEALTH_VALUES",
    "PROVIDER_FALLBACKS",
    "SESSIONS_LOADED",
    "SESSION_RUN_ERRORS",
    "SESSION_RUN_SECONDS",
    "StreamMetrics",
    "process_rss_bytes",
]

# Histogram buckets in seconds: stage latencies from 100 us to 10 s.
_LATENCY_BUCKETS_S = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
# Describing one clip with GAMA: well under a second (tiny) to minutes (7B on CPU).
_DESCRIBE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: Gauge values of ``ostinato_breaker_state``.
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
#: Gauge values of ``ostinato_health_status``.
HEALTH_VALUES = {"ok": 0, "degraded": 1, "failing": 2}

_PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss_bytes() -> float:
    """Resident set size of this process in bytes.

    Reads ``/proc/self/statm`` on Linux; elsewhere falls back to the peak RSS from
    ``resource.getrusage`` (an upper bound).

    Returns:
        RSS in bytes.
    """
    statm = Path("/proc/self/statm")
    if statm.exists():
        return float(int(statm.read_text().split()[1]) * _PAGE_SIZE_BYTES)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)


class StreamMetrics:
    """All metric objects of the streaming pipeline, registered on one registry.

    Args:
        registry: Where to register; a fresh ``CollectorRegistry`` when omitted. Pass
            ``prometheus_client.REGISTRY`` to expose through the default registry (only
            once per process: Prometheus refuses duplicate names).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Channels (edges between stages).
        self.channel_depth = Gauge(
            "ostinato_channel_depth_items", "Items queued in a channel", ["channel"], registry=r
        )
        self.channel_capacity = Gauge(
            "ostinato_channel_capacity_items", "Capacity of a channel", ["channel"], registry=r
        )
        self.channel_items = Counter(
            "ostinato_channel_items_total", "Items accepted by a channel", ["channel"], registry=r
        )
        self.channel_dropped = Counter(
            "ostinato_channel_dropped_items_total",
            "Items a channel dropped, by reason (drop_oldest, drop_newest, full, closed)",
            ["channel", "reason"],
            registry=r,
        )
        # Stages.
        self.stage_latency = Histogram(
            "ostinato_stage_latency_seconds",
            "Time spent per item in a stage (window: cut; inference: batch run; post: trim; sink: write)",
            ["stage"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_errors = Counter(
            "ostinato_stage_errors_total",
            "Errors raised in a stage, by class (input, transient, permanent)",
            ["stage", "error_class"],
            registry=r,
        )
        # Windows and inference.
        self.windows_dropped = Counter(
            "ostinato_pipeline_dropped_windows_total",
            "Windows not inferred, by reason (deadline, breaker_open, inference_error, input)",
            ["reason"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "ostinato_inference_queue_wait_seconds",
            "Time a window waited between becoming ready and its batch starting",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "ostinato_inference_batch_size_windows",
            "Windows per inference batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.window_latency = Histogram(
            "ostinato_pipeline_window_latency_seconds",
            "From a window becoming ready to its features being emitted",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        # Per-stream caches of split exports (conv frames, left-context K/V).
        self.kv_restarts = Counter(
            "ostinato_inference_kv_restarts_total",
            "Streams whose K/V past restarted because a window before was dropped or failed",
            registry=r,
        )
        self.kv_short_windows = Counter(
            "ostinato_inference_kv_short_windows_total",
            "Windows that attended to less past than their left context (after a restart)",
            registry=r,
        )
        self.held_windows = Gauge(
            "ostinato_inference_held_windows",
            "Windows waiting for their stream's previous window (K/V path; bounded by max_held_windows)",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "ostinato_inference_cache_bytes",
            "Memory of the per-stream caches, by cache (kv: left-context keys/values)",
            ["cache"],
            registry=r,
        )
        self.rtf = Gauge(
            "ostinato_inference_rtf_ratio",
            "Real-time factor of inference: busy time / audio time inferred (lower is faster)",
            registry=r,
        )
        self.lag = Gauge(
            "ostinato_pipeline_lag_seconds",
            "Age of the newest audio in a batch when the batch started (worst stream)",
            registry=r,
        )
        self.frames_out = Counter(
            "ostinato_pipeline_frames_total", "Feature frames emitted", registry=r
        )
        self.audio_in = Counter(
            "ostinato_source_audio_seconds_total", "Audio received from sources", registry=r
        )
        self.source_reconnects = Counter(
            "ostinato_source_reconnects_total",
            "Reconnect attempts of network sources",
            ["source"],
            registry=r,
        )
        self.source_gap_samples = Counter(
            "ostinato_source_gap_samples_total",
            "Samples lost by sources (dropped audio blocks, sequence gaps) and filled with silence",
            ["source"],
            registry=r,
        )
        self.active_streams = Gauge(
            "ostinato_pipeline_active_streams", "Streams currently running", registry=r
        )
        # Resilience and health.
        self.breaker_state = Gauge(
            "ostinato_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["breaker"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "ostinato_breaker_transitions_total",
            "Circuit breaker state changes, by new state",
            ["breaker", "state"],
            registry=r,
        )
        self.retries = Counter(
            "ostinato_retry_attempts_total", "Retries after transient errors", ["operation"], registry=r
        )
        self.health = Gauge(
            "ostinato_health_status", "Stage health: 0 ok, 1 degraded, 2 failing", ["stage"], registry=r
        )
        self.anomalies = Counter(
            "ostinato_health_anomalies_total",
            "Sudden regressions flagged by the EWMA+MAD detector",
            ["stage", "signal"],
            registry=r,
        )
        # Network service (ostinato serve).
        self.http_requests = Counter(
            "ostinato_server_http_requests_total",
            "HTTP requests answered, by route template and status code",
            ["route", "status"],
            registry=r,
        )
        self.ws_connections = Gauge(
            "ostinato_server_websocket_connections", "Open WebSocket connections", registry=r
        )
        self.ws_frames = Counter(
            "ostinato_server_frames_total",
            "Wire frames received or sent, by direction (in, out) and frame type",
            ["direction", "type"],
            registry=r,
        )
        self.rejected = Counter(
            "ostinato_server_rejected_total",
            "Requests, messages or connections refused, by reason (auth, origin, too_many_streams, "
            "oversize, rate, protocol, audio, idle, upload_size…)",
            ["reason"],
            registry=r,
        )
        self.replayed = Counter(
            "ostinato_server_replayed_frames_total",
            "Output frames a resuming client missed: sent again from the replay buffer (replayed) "
            "or no longer held (lost, reported to the client as an output_gap error)",
            ["result"],
            registry=r,
        )
        self.event_latency = Histogram(
            "ostinato_server_event_latency_seconds",
            "From receiving the audio that completed a window to sending the frames it produced",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        # Audio descriptions (GAMA; stream/describe.py).
        self.describe_submitted = Counter(
            "ostinato_describe_jobs_submitted_total", "Describe jobs handed to the describe worker", registry=r
        )
        self.describe_completed = Counter(
            "ostinato_describe_jobs_completed_total", "Describe jobs that produced a description", registry=r
        )
        self.describe_failed = Counter(
            "ostinato_describe_jobs_failed_total", "Describe jobs that ended in an error (timeout included)", registry=r
        )
        self.describe_dropped = Counter(
            "ostinato_describe_jobs_dropped_total",
            "Describe jobs dropped, by reason (queue_full, closed, shutdown)",
            ["reason"],
            registry=r,
        )
        self.describe_latency = Histogram(
            "ostinato_describe_latency_seconds",
            "Time the model took to describe one clip (completed and failed jobs)",
            buckets=_DESCRIBE_BUCKETS_S,
            registry=r,
        )
        # Process and model.
        self.rss = Gauge(
            "ostinato_process_resident_memory_bytes", "Resident memory of this process", registry=r
        )
        self.rss.set_function(process_rss_bytes)
        self.model_memory = Gauge(
            "ostinato_model_memory_bytes",
            "Resident memory added by loading the model sessions (RSS delta at load)",
            ["model"],
            registry=r,
        )
        self.provider_fallback = Gauge(
            "ostinato_inference_provider_fallback",
            "1 when the requested execution provider did not load and CPU is used",
            registry=r,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Read one sample from the registry (0.0 when absent). Meant for tests and summaries.

        Args:
            name: Full sample name, e.g. ``ostinato_channel_dropped_items_total``.
            labels: Label values of the sample.

        Returns:
            The sample value.
        """
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else float(v)
