"""Health model: reasons per stage, and the EWMA+MAD anomaly detector."""

from __future__ import annotations

import numpy as np

from ostinato.stream.health import AnomalyDetector, HealthConfig, HealthMonitor, HealthState
from ostinato.stream.metrics import StreamMetrics


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_detector_flags_sudden_regression_only() -> None:
    rng = np.random.default_rng(0)
    d = AnomalyDetector(alpha=0.05, threshold=8.0, warmup=30, min_delta=0.001)
    flags = [d.update(0.010 + 0.0005 * rng.standard_normal()) for _ in range(300)]
    assert not any(flags)  # noise around a stable baseline is never flagged
    assert d.update(0.050)  # a 5x jump is
    assert not d.update(0.004)  # getting faster is not a regression
    assert abs(d.baseline - 0.010) < 0.002  # the spike barely moved the baseline


def test_detector_adapts_to_a_lasting_shift() -> None:
    d = AnomalyDetector(alpha=0.1, threshold=6.0, warmup=10, min_delta=0.001)
    rng = np.random.default_rng(1)
    for _ in range(100):
        d.update(0.01 + 0.0002 * rng.standard_normal())
    flags = [d.update(0.03 + 0.0002 * rng.standard_normal()) for _ in range(400)]
    assert flags[0] and not any(flags[-50:])


def test_reasons_and_states() -> None:
    clock = Clock()
    metrics = StreamMetrics()
    h = HealthMonitor(HealthConfig(lag_degraded_s=1.0, lag_failing_s=5.0), clock=clock, metrics=metrics)
    h.set_queue("inference", 2, 10)
    assert h.stage("inference").state is HealthState.OK
    h.set_queue("inference", 10, 10)
    health = h.stage("inference")
    assert health.state is HealthState.DEGRADED and "queue saturated: 10/10" in health.reasons
    h.set_lag("inference", 6.0)
    h.set_breaker("inference", "open")
    health = h.stage("inference")
    assert health.state is HealthState.FAILING
    assert any("lag 6.00 s" in r for r in health.reasons) and "circuit breaker open" in health.reasons
    assert metrics.value("ostinato_health_status", {"stage": "inference"}) == 2
    h.set_fallback("session", "CUDAExecutionProvider did not load")
    assert h.stage("session").state is HealthState.DEGRADED
    assert h.overall().stage == "inference" and h.overall().state is HealthState.FAILING


def test_error_rate_and_latency_anomaly_hold() -> None:
    clock = Clock()
    h = HealthMonitor(HealthConfig(error_window=20, warmup=10, anomaly_hold_s=5.0), clock=clock, metrics=StreamMetrics())
    for _ in range(50):
        h.observe_outcome("sink", True)
        h.observe_latency("sink", 0.002)
    assert h.stage("sink").state is HealthState.OK
    h.observe_latency("sink", 0.015)  # 7x its baseline, but 13 ms: scheduler noise, not degradation
    assert h.stage("sink").state is HealthState.OK
    h.observe_latency("sink", 0.5)
    health = h.stage("sink")
    assert health.state is HealthState.DEGRADED and "latency anomaly" in health.reasons[0]
    clock.now_s += 5.1
    assert h.stage("sink").state is HealthState.OK
    for _ in range(15):
        h.observe_outcome("sink", False)
    health = h.stage("sink")
    assert health.state is HealthState.FAILING and any("error rate" in r for r in health.reasons)
