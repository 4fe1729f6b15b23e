"""The pipeline's configuration, status snapshot and consumer protocol (:mod:`ostinato.stream.pipeline`)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from ostinato.stream.channel import OverflowPolicy
from ostinato.stream.errors import ConfigError
from ostinato.stream.frames import StreamEnd, StreamFeatures
from ostinato.stream.retry import RetryPolicy
from ostinato.stream.windowing import WindowerConfig

__all__ = ["FeatureConsumer", "PipelineConfig", "PipelineStatus"]


class FeatureConsumer(Protocol):
    """A stage after inference: sinks, the matcher, a server's per-client router."""

    async def consume(self, features: StreamFeatures) -> None:
        """Handle one window's features (called in stream order)."""
        ...

    async def end_stream(self, end: StreamEnd) -> None:
        """A stream ended (after its last features); flush per-stream state."""
        ...

    async def close(self) -> None:
        """Release files/connections; called once at shutdown."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Queue sizes, policies and shutdown timeouts.

    Args:
        windower: Window geometry (must match the model's stride and receptive field).
        source_queue_chunks: Capacity of each source → window edge.
        source_policy: Policy of that edge; ``None`` = ``drop_oldest`` for live sources,
            ``block`` for files and other sources that can wait.
        window_queue_windows: Capacity of the shared window → inference edge (seed: 10).
        window_policy: Its policy (``block``: inference sets the pace).
        features_queue: Capacity of the inference → consumers edge.
        features_policy: Its policy.
        shutdown_timeout_s: How long a stop may drain before work is cancelled.
        cancel_timeout_s: How long to wait for cancelled tasks to finish.
        consumer_retry: Retries of transient consumer errors.
        serve: Keep running with no sources until :meth:`Pipeline.stop` (a server adds
            streams with :meth:`Pipeline.add_source`).
    """

    windower: WindowerConfig = WindowerConfig()
    source_queue_chunks: int = 64
    source_policy: OverflowPolicy | None = None
    window_queue_windows: int = 10
    window_policy: OverflowPolicy = "block"
    features_queue: int = 32
    features_policy: OverflowPolicy = "block"
    shutdown_timeout_s: float = 10.0
    cancel_timeout_s: float = 3.0
    consumer_retry: RetryPolicy = RetryPolicy(max_attempts=3, base_delay_s=0.05, max_delay_s=1.0)
    serve: bool = False

    def __post_init__(self) -> None:
        for name in ("source_queue_chunks", "window_queue_windows", "features_queue"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected an integer >= 1")
        for name in ("shutdown_timeout_s", "cancel_timeout_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected >= 0 seconds")


@dataclasses.dataclass(frozen=True, slots=True)
class PipelineStatus:
    """A live snapshot for status lines and ``status`` frames."""

    elapsed_s: float
    audio_s: float
    frames: int
    rtf: float
    inference_rtf: float
    lag_s: float
    level_dbfs: float
    dropped: int
    health: str
    reasons: tuple[str, ...]
    active_streams: int
