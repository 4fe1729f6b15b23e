"""The inference stage's settings, counters and model protocol (see :mod:`ostinato.stream.infer`)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ostinato.runtime.w2v_frontend import FrontEndConfig
from ostinato.runtime.w2v_kv import KVConfig
from ostinato.stream.breaker import BreakerConfig
from ostinato.stream.errors import ConfigError
from ostinato.stream.retry import RetryPolicy
from ostinato.stream.summary import LatencyReservoir

__all__ = ["BatchModel", "InferenceConfig", "InferenceStats"]


class BatchModel(Protocol):
    """What the stage needs from a model (``ostinato.runtime.Wav2Vec2Model`` fits)."""

    sample_rate: int
    frame_stride_samples: int
    receptive_field_samples: int
    output_names: tuple[str, ...]
    default_output: str

    def run_batch(
        self, windows: npt.NDArray[np.float32], outputs: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[np.float32]]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class InferenceConfig:
    """Batching, deadline and resilience settings.

    Args:
        batch_size: Most windows per model run (the seed config uses 4).
        max_wait_ms: Longest wait for more windows once one is ready.
        max_lag_s: Windows whose newest audio arrived longer ago than this when their batch
            would start are dropped (``inf`` disables the deadline, e.g. for offline files).
        output: Model output to emit (``None``: the model's default output).
        retry: Retries of transient inference failures.
        breaker: Circuit breaker around inference.
        frontend: Conv-frame cache and running statistics for models with the split graph
            (``None``: always run whole windows through ``model.onnx``, with each window's
            own normalisation statistics).
        kv: Left-context K/V cache for models with ``encoder_cached.onnx`` (needs
            ``frontend``): the transformer runs only each window's hop + right context,
            attending to the cached keys/values of its left context; at most one window per
            stream is in flight (``None``: the transformer runs whole windows).
        max_held_windows: Windows held back while their stream has one in flight (K/V
            cache only); beyond it the stage stops reading its inbox (backpressure).
    """

    batch_size: int = 4
    max_wait_ms: float = 5.0
    max_lag_s: float = 5.0
    output: str | None = None
    retry: RetryPolicy = RetryPolicy(max_attempts=3, base_delay_s=0.05, max_delay_s=1.0)
    breaker: BreakerConfig = BreakerConfig()
    frontend: FrontEndConfig | None = FrontEndConfig()
    kv: KVConfig | None = KVConfig()
    max_held_windows: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 256:
            raise ConfigError(f"batch_size={self.batch_size!r}; expected an integer in [1, 256]")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}; expected 0..10000")
        if not self.max_lag_s > 0:
            raise ConfigError(f"max_lag_s={self.max_lag_s}; expected > 0 (inf disables the deadline)")
        if not isinstance(self.max_held_windows, int) or self.max_held_windows < 1:
            raise ConfigError(f"max_held_windows={self.max_held_windows!r}; expected a positive integer")


@dataclasses.dataclass(slots=True)
class InferenceStats:
    """Running counters of the stage (read by the pipeline summary)."""

    windows_in: int = 0
    windows_run: int = 0
    batches: int = 0
    frames_out: int = 0
    transformer_frames: int = 0  # frames run through the transformer (context included)
    busy_s: float = 0.0
    audio_s: float = 0.0
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    timing: dict[str, LatencyReservoir] = dataclasses.field(
        default_factory=lambda: {k: LatencyReservoir() for k in ("queue_wait", "inference", "post", "latency")}
    )
