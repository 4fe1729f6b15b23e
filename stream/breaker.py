"""Circuit breaker (sans-IO, injectable clock): fail fast while a dependency keeps failing.

States::

    closed --(N consecutive failures, or error rate >= threshold)--> open
    open --(cool-down elapsed)--> half_open   (lets ``half_open_probes`` calls through)
    half_open --(probes succeed)--> closed
    half_open --(a probe fails)--> open       (cool-down starts again)

Guard a call with :meth:`CircuitBreaker.allow` (or :meth:`check`, which raises
:class:`~ostinato.stream.errors.BreakerOpenError`), then report its outcome with
:meth:`record_success` / :meth:`record_failure`. The state is exported as
``ostinato_breaker_state`` when metrics are attached.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import time
from collections.abc import Callable

from ostinato.stream.errors import BreakerOpenError, ConfigError
from ostinato.stream.metrics import BREAKER_STATE_VALUES, StreamMetrics

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker"]

logger = logging.getLogger(__name__)


class BreakerState(enum.StrEnum):
    """Circuit breaker state."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it recovers.

    Args:
        failure_threshold: Consecutive failures that open the breaker.
        error_rate_threshold: Failure fraction over the last ``window_calls`` calls that opens
            it (once at least ``min_calls`` were seen); 1.0 disables the rate rule.
        window_calls: Size of the rolling window for the error rate.
        min_calls: Calls needed before the error-rate rule applies.
        cooldown_s: Time spent open before probing.
        half_open_probes: Successful probes needed to close again.
    """

    failure_threshold: int = 5
    error_rate_threshold: float = 0.5
    window_calls: int = 20
    min_calls: int = 10
    cooldown_s: float = 5.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigError(f"failure_threshold={self.failure_threshold}; expected >= 1")
        if not 0.0 < self.error_rate_threshold <= 1.0:
            raise ConfigError(f"error_rate_threshold={self.error_rate_threshold}; expected in (0, 1]")
        if self.window_calls < 1 or not 1 <= self.min_calls <= self.window_calls:
            raise ConfigError(
                f"window_calls={self.window_calls}, min_calls={self.min_calls}; expected 1 <= min_calls <= window_calls"
            )
        if self.cooldown_s < 0:
            raise ConfigError(f"cooldown_s={self.cooldown_s}; expected >= 0")
        if self.half_open_probes < 1:
            raise ConfigError(f"half_open_probes={self.half_open_probes}; expected >= 1")


class CircuitBreaker:
    """Tracks failures of one dependency and decides whether calls may proceed.

    Args:
        name: Label for metrics and logs (``inference``, ``source:ws://…``).
        config: Thresholds.
        clock: Monotonic clock in seconds (injectable for tests).
        metrics: Where to export the state (optional).
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig = BreakerConfig(),
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._metrics = metrics
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._window: collections.deque[bool] = collections.deque(maxlen=config.window_calls)
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0
        #: Times the breaker opened.
        self.open_count = 0
        self._export()

    @property
    def state(self) -> BreakerState:
        """Current state (an open breaker whose cool-down elapsed reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.cooldown_s:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def retry_in_s(self) -> float:
        """Seconds until an open breaker half-opens (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.config.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may proceed now; in half-open state this reserves a probe slot.

        Returns:
            True to proceed (then report the outcome), False to fail fast.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes_in_flight < self.config.half_open_probes:
            self._probes_in_flight += 1
            return True
        return False

    def check(self) -> None:
        """Like :meth:`allow`, but raise when the call must not proceed.

        Raises:
            BreakerOpenError: While open (or half-open with every probe slot taken).
        """
        if not self.allow():
            raise BreakerOpenError(
                f"circuit breaker {self.name!r} is {self._state.value}; retry in {self.retry_in_s:.1f} s"
            )

    def record_success(self) -> None:
        """Report that an allowed call succeeded."""
        self._window.append(True)
        self._consecutive = 0
        if self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_probes:
                self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Report that an allowed call failed (with a transient or permanent error)."""
        self._window.append(False)
        self._consecutive += 1
        if self._state is BreakerState.HALF_OPEN:
            self._trip("probe failed")
            return
        if self._state is BreakerState.OPEN:
            return
        if self._consecutive >= self.config.failure_threshold:
            self._trip(f"{self._consecutive} consecutive failures")
            return
        failures = self._window.count(False)
        if len(self._window) >= self.config.min_calls and failures / len(self._window) >= self.config.error_rate_threshold:
            self._trip(f"error rate {failures}/{len(self._window)}")

    def reset(self) -> None:
        """Close the breaker and forget all history."""
        self._window.clear()
        self._consecutive = 0
        self._transition(BreakerState.CLOSED)

    def _trip(self, reason: str) -> None:
        self._opened_at = self._clock()
        self.open_count += 1
        logger.warning("circuit breaker %s opened (%s); probing again in %.1f s", self.name, reason, self.config.cooldown_s)
        self._transition(BreakerState.OPEN)

    def _transition(self, state: BreakerState) -> None:
        if state is self._state and state is not BreakerState.OPEN:
            return
        if state is BreakerState.CLOSED and self._state is not BreakerState.CLOSED:
            logger.info("circuit breaker %s closed", self.name)
            self._window.clear()
        self._state = state
        self._probes_in_flight = 0
        self._probe_successes = 0
        if state is BreakerState.HALF_OPEN:
            self._consecutive = 0
        if self._metrics is not None:
            self._metrics.breaker_transitions.labels(self.name, state.value).inc()
        self._export()

    def _export(self) -> None:
        if self._metrics is not None:
            self._metrics.breaker_state.labels(self.name).set(BREAKER_STATE_VALUES[self._state.value])
