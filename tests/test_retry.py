"""retry_call: backoff with jitter, bounded attempts, transient-only retries."""

from __future__ import annotations

import random
import time

import pytest

from ostinato.stream.errors import ConfigError, InvalidAudioError, SourceConnectionError
from ostinato.stream.retry import RetryPolicy, retry_call


def test_delays_grow_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.1, max_delay_s=1.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(0)
    delays = list(policy.delays_s(rng))
    assert len(delays) == 5
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0]
    for d, n in zip(delays, nominal, strict=True):
        assert n * 0.5 <= d <= n
    assert RetryPolicy(jitter=0.0, base_delay_s=0.3).delay_s(1) == pytest.approx(0.3)
    # Jitter decorrelates: two clients rarely pick the same delay.
    assert len({RetryPolicy(jitter=1.0).delay_s(3, random.Random(s)) for s in range(20)}) == 20


async def test_transient_errors_are_retried_until_success() -> None:
    calls: list[float] = []
    seen: list[int] = []

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise SourceConnectionError("reset by peer")
        return "ok"

    policy = RetryPolicy(max_attempts=5, base_delay_s=0.02, max_delay_s=0.1, jitter=0.0)
    result = await retry_call(flaky, policy, on_retry=lambda attempt, e, d: seen.append(attempt))
    assert result == "ok" and len(calls) == 3 and seen == [1, 2]
    assert calls[1] - calls[0] >= 0.015 and calls[2] - calls[1] >= 0.035


async def test_attempts_are_bounded() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError):
        await retry_call(down, RetryPolicy(max_attempts=3, base_delay_s=0.0, jitter=0.0))
    assert calls == 3


@pytest.mark.parametrize("error", [InvalidAudioError("NaN"), KeyError("bug")])
async def test_input_and_permanent_errors_are_not_retried(error: Exception) -> None:
    calls = 0

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        await retry_call(bad, RetryPolicy(max_attempts=5, base_delay_s=0.0))
    assert calls == 1


def test_invalid_policy() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(base_delay_s=2, max_delay_s=1)
    with pytest.raises(ConfigError):
        RetryPolicy(jitter=1.5)
