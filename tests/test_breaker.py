"""CircuitBreaker: open on consecutive failures or error rate, half-open probe, close."""

from __future__ import annotations

import pytest

from ostinato.stream.breaker import BreakerConfig, BreakerState, CircuitBreaker
from ostinato.stream.errors import BreakerOpenError, ConfigError, ErrorClass
from ostinato.stream.metrics import StreamMetrics


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_open_half_open_close_cycle() -> None:
    clock = Clock()
    metrics = StreamMetrics()
    b = CircuitBreaker("inference", BreakerConfig(failure_threshold=3, cooldown_s=5.0), clock=clock, metrics=metrics)
    state = lambda: metrics.value("ostinato_breaker_state", {"breaker": "inference"})  # noqa: E731
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state is BreakerState.CLOSED and state() == 0
    b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and state() == 2 and b.open_count == 1
    assert not b.allow()
    with pytest.raises(BreakerOpenError, match="retry in 5.0 s") as info:
        b.check()
    assert info.value.error_class is ErrorClass.TRANSIENT
    clock.now_s += 5.0
    assert b.state is BreakerState.HALF_OPEN and state() == 1
    assert b.allow()  # the probe
    assert not b.allow()  # only one probe at a time
    b.record_failure()  # probe failed: open again, cool-down restarts
    assert b.state is BreakerState.OPEN and b.open_count == 2
    clock.now_s += 4.9
    assert not b.allow()
    clock.now_s += 0.1
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED and state() == 0
    transitions = metrics.value("ostinato_breaker_transitions_total", {"breaker": "inference", "state": "open"})
    assert transitions == 2


def test_error_rate_threshold_opens() -> None:
    b = CircuitBreaker("net", BreakerConfig(failure_threshold=100, error_rate_threshold=0.5, window_calls=10, min_calls=10), clock=Clock())
    for i in range(9):
        b.allow()
        b.record_failure() if i % 2 else b.record_success()
    assert b.state is BreakerState.CLOSED  # 4/9 failed and under min_calls
    b.allow()
    b.record_failure()  # 5/10
    assert b.state is BreakerState.OPEN


def test_success_resets_consecutive_count() -> None:
    b = CircuitBreaker("x", BreakerConfig(failure_threshold=2, error_rate_threshold=1.0), clock=Clock())
    for _ in range(10):
        b.record_failure()
        b.record_success()
    assert b.state is BreakerState.CLOSED


def test_several_probes_required() -> None:
    clock = Clock()
    b = CircuitBreaker("x", BreakerConfig(failure_threshold=1, cooldown_s=1, half_open_probes=2), clock=clock)
    b.record_failure()
    clock.now_s += 1
    assert b.allow() and b.allow() and not b.allow()
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN
    b.record_success()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    b.reset()
    assert b.state is BreakerState.CLOSED and b.allow()


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_threshold": 0}, {"error_rate_threshold": 0}, {"min_calls": 30}, {"cooldown_s": -1}, {"half_open_probes": 0}],
)
def test_invalid_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
