"""Per-stage health (``ok | degraded | failing`` with reasons) and a regression detector.

The pipeline feeds a :class:`HealthMonitor` with what it observes: queue depth vs capacity,
lag, breaker states, provider fallback, per-item latency and success/failure. The monitor
turns them into a :class:`StageHealth` per stage, with human-readable reasons, and exports
``ostinato_health_status``. Sudden regressions of latency or error rate are caught by an
:class:`AnomalyDetector` (EWMA baseline + median absolute deviation): a stage with a recent
anomaly is ``degraded`` for ``anomaly_hold_s``. Sans-IO apart from the injectable clock.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import time
from collections.abc import Callable

from ostinato.stream.errors import ConfigError
from ostinato.stream.metrics import HEALTH_VALUES, StreamMetrics

__all__ = ["AnomalyDetector", "HealthConfig", "HealthMonitor", "HealthState", "StageHealth"]

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


class HealthState(enum.StrEnum):
    """Health of a stage, ordered from best to worst."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


_ORDER = {HealthState.OK: 0, HealthState.DEGRADED: 1, HealthState.FAILING: 2}


@dataclasses.dataclass(frozen=True, slots=True)
class StageHealth:
    """Health of one stage with the reasons behind it."""

    stage: str
    state: HealthState
    reasons: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class HealthConfig:
    """Thresholds of the health model.

    Args:
        saturation_ratio: Queue depth / capacity at or above which a stage is degraded.
        lag_degraded_s: Lag above which a stage is degraded.
        lag_failing_s: Lag above which it is failing.
        error_rate_degraded: Recent error fraction above which a stage is degraded.
        error_rate_failing: Recent error fraction above which it is failing.
        error_window: Number of recent outcomes the error fraction covers.
        anomaly_hold_s: How long an anomaly keeps a stage degraded.
        ewma_alpha: Smoothing of the detector's baseline (0..1, higher follows faster).
        mad_threshold: Deviations (in robust sigmas) that count as an anomaly.
        warmup: Observations before the detector may flag anything.
        latency_min_delta_s: A latency rise smaller than this is never an anomaly however
            steady the baseline was (one 20 ms audio frame; a 0.5 ms step taking 3 ms once is
            scheduler noise, not degradation).
    """

    saturation_ratio: float = 0.9
    lag_degraded_s: float = 1.0
    lag_failing_s: float = 5.0
    error_rate_degraded: float = 0.05
    error_rate_failing: float = 0.5
    error_window: int = 50
    anomaly_hold_s: float = 10.0
    ewma_alpha: float = 0.05
    mad_threshold: float = 8.0
    warmup: int = 30
    latency_min_delta_s: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.saturation_ratio <= 1:
            raise ConfigError(f"saturation_ratio={self.saturation_ratio}; expected in (0, 1]")
        if not 0 <= self.lag_degraded_s <= self.lag_failing_s:
            raise ConfigError(f"lag_degraded_s={self.lag_degraded_s}, lag_failing_s={self.lag_failing_s}; expected 0 <= degraded <= failing")
        if not 0 <= self.error_rate_degraded <= self.error_rate_failing <= 1:
            raise ConfigError("expected 0 <= error_rate_degraded <= error_rate_failing <= 1")
        if not 0 < self.ewma_alpha <= 1 or self.mad_threshold <= 0 or self.warmup < 1 or self.error_window < 1:
            raise ConfigError("expected 0 < ewma_alpha <= 1, mad_threshold > 0, warmup >= 1, error_window >= 1")
        if self.latency_min_delta_s < 0:
            raise ConfigError(f"latency_min_delta_s={self.latency_min_delta_s}; expected >= 0")


class AnomalyDetector:
    """Flags values far above their recent baseline: EWMA mean + MAD of recent residuals.

    Only upward deviations count (a stage getting faster is not a regression). An outlier's
    pull on the baseline is clipped, so a short spike does not shift it, while a lasting
    shift slowly becomes the new normal and stops being flagged.

    Args:
        alpha: EWMA smoothing factor.
        threshold: Residual, in robust sigmas (1.4826 * MAD), above which a value is anomalous.
        warmup: Values to see before flagging.
        min_delta: Absolute residual below which nothing is flagged (noise floor).
        window: How many recent residuals the MAD is computed over.
    """

    def __init__(self, alpha: float = 0.05, threshold: float = 8.0, warmup: int = 30, min_delta: float = 0.0, window: int = 64) -> None:
        self.alpha = alpha
        self.threshold = threshold
        self.warmup = warmup
        self.min_delta = min_delta
        self._residuals: collections.deque[float] = collections.deque(maxlen=window)
        self._mean = 0.0
        self.count = 0

    @property
    def baseline(self) -> float:
        """Current EWMA baseline."""
        return self._mean

    def scale(self) -> float:
        """Robust spread of recent residuals (1.4826 * MAD)."""
        if not self._residuals:
            return 0.0
        ordered = sorted(self._residuals)
        mid = len(ordered) // 2
        median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
        return _MAD_TO_SIGMA * median

    def update(self, value: float) -> bool:
        """Add a value; return True if it is an upward anomaly.

        Args:
            value: The new observation (non-finite values are ignored).

        Returns:
            Whether ``value`` is anomalous relative to the baseline before it.
        """
        if not math.isfinite(value):
            return False
        self.count += 1
        if self.count == 1:
            self._mean = value
            return False
        residual = value - self._mean
        limit = max(self.threshold * self.scale(), self.min_delta)
        anomalous = self.count > self.warmup and residual > limit
        # Clip the outlier's pull on the baseline and on the spread estimate.
        clipped = min(residual, limit) if limit > 0 and self.count > self.warmup else residual
        self._mean += self.alpha * clipped
        self._residuals.append(abs(clipped))
        return anomalous


@dataclasses.dataclass(slots=True)
class _Stage:
    depth: int = 0
    capacity: int = 0
    lag_s: float = 0.0
    breaker: str = "closed"
    fallback: str = ""
    outcomes: collections.deque[bool] = dataclasses.field(default_factory=collections.deque)
    latency: AnomalyDetector = dataclasses.field(default_factory=AnomalyDetector)
    error_rate: AnomalyDetector = dataclasses.field(default_factory=AnomalyDetector)
    anomaly_until_s: float = -math.inf
    anomaly_reason: str = ""


class HealthMonitor:
    """Collects observations per stage and reports health.

    Args:
        config: Thresholds.
        clock: Monotonic clock (injectable for tests).
        metrics: Exports ``ostinato_health_status`` and anomaly counts (optional).
    """

    def __init__(self, config: HealthConfig = HealthConfig(), *, clock: Callable[[], float] = time.monotonic, metrics: StreamMetrics | None = None) -> None:
        self.config = config
        self._clock = clock
        self._metrics = metrics
        self._stages: dict[str, _Stage] = {}

    def _stage(self, name: str) -> _Stage:
        st = self._stages.get(name)
        if st is None:
            c = self.config
            st = _Stage(
                outcomes=collections.deque(maxlen=c.error_window),
                latency=AnomalyDetector(c.ewma_alpha, c.mad_threshold, c.warmup, min_delta=c.latency_min_delta_s),
                error_rate=AnomalyDetector(c.ewma_alpha, c.mad_threshold, c.warmup, min_delta=0.1),
            )
            self._stages[name] = st
        return st

    def observe_latency(self, stage: str, latency_s: float) -> None:
        """Record one item's processing time in ``stage``."""
        st = self._stage(stage)
        baseline = st.latency.baseline
        if st.latency.update(latency_s):
            self._flag(stage, st, "latency", f"latency anomaly: {latency_s * 1000:.1f} ms vs baseline {baseline * 1000:.1f} ms")

    def observe_outcome(self, stage: str, ok: bool) -> None:
        """Record whether one item in ``stage`` succeeded."""
        st = self._stage(stage)
        st.outcomes.append(ok)
        rate = st.outcomes.count(False) / len(st.outcomes)
        baseline = st.error_rate.baseline
        if st.error_rate.update(rate):
            self._flag(stage, st, "error_rate", f"error-rate anomaly: {rate:.0%} vs baseline {baseline:.0%}")

    def set_queue(self, stage: str, depth: int, capacity: int) -> None:
        """Record the depth of the queue feeding ``stage``."""
        st = self._stage(stage)
        st.depth, st.capacity = depth, capacity

    def set_lag(self, stage: str, lag_s: float) -> None:
        """Record how far behind real time ``stage`` is."""
        self._stage(stage).lag_s = lag_s

    def set_breaker(self, stage: str, state: str) -> None:
        """Record the state of the breaker guarding ``stage`` (``closed``/``half_open``/``open``)."""
        self._stage(stage).breaker = state

    def set_fallback(self, stage: str, reason: str) -> None:
        """Record a provider fallback (empty string: none)."""
        self._stage(stage).fallback = reason

    def stage(self, name: str) -> StageHealth:
        """Health of one stage now."""
        st = self._stage(name)
        c = self.config
        failing: list[str] = []
        degraded: list[str] = []
        if st.capacity and st.depth / st.capacity >= c.saturation_ratio:
            degraded.append(f"queue saturated: {st.depth}/{st.capacity}")
        if st.lag_s > c.lag_failing_s:
            failing.append(f"lag {st.lag_s:.2f} s > {c.lag_failing_s:g} s")
        elif st.lag_s > c.lag_degraded_s:
            degraded.append(f"lag {st.lag_s:.2f} s > {c.lag_degraded_s:g} s")
        if st.breaker == "open":
            failing.append("circuit breaker open")
        elif st.breaker == "half_open":
            degraded.append("circuit breaker half-open (probing)")
        if st.fallback:
            degraded.append(f"provider fallback: {st.fallback}")
        if st.outcomes:
            rate = st.outcomes.count(False) / len(st.outcomes)
            if rate > c.error_rate_failing:
                failing.append(f"error rate {rate:.0%}")
            elif rate > c.error_rate_degraded:
                degraded.append(f"error rate {rate:.0%}")
        if self._clock() < st.anomaly_until_s:
            degraded.append(st.anomaly_reason)
        state = HealthState.FAILING if failing else HealthState.DEGRADED if degraded else HealthState.OK
        if self._metrics is not None:
            self._metrics.health.labels(name).set(HEALTH_VALUES[state.value])
        return StageHealth(name, state, tuple(failing + degraded))

    def snapshot(self) -> dict[str, StageHealth]:
        """Health of every stage seen so far."""
        return {name: self.stage(name) for name in sorted(self._stages)}

    def overall(self) -> StageHealth:
        """The worst stage's health (``pipeline`` when every stage is ok)."""
        worst = StageHealth("pipeline", HealthState.OK)
        for health in self.snapshot().values():
            if _ORDER[health.state] > _ORDER[worst.state]:
                worst = health
        return worst

    def _flag(self, stage: str, st: _Stage, signal: str, reason: str) -> None:
        st.anomaly_until_s = self._clock() + self.config.anomaly_hold_s
        st.anomaly_reason = reason
        if self._metrics is not None:
            self._metrics.anomalies.labels(stage, signal).inc()
