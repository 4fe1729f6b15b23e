"""Bounded retries with exponential backoff and jitter, for transient errors only.

``input`` and ``permanent`` errors (see :func:`~ostinato.stream.errors.classify_error`) are
raised at once: retrying bad data or a missing library only delays the message the user
needs. Transient errors are retried up to ``max_attempts`` calls in total, sleeping
``min(max_delay_s, base_delay_s * multiplier ** (attempt - 1))`` scaled by jitter between
calls, so many clients that failed together do not retry in lockstep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from ostinato.stream.errors import ConfigError, ErrorClass, classify_error

__all__ = ["RetryPolicy", "retry_call"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Args:
        max_attempts: Total calls including the first (1 = no retry).
        base_delay_s: Delay before the first retry, before jitter.
        max_delay_s: Cap on any delay.
        multiplier: Growth factor per attempt.
        jitter: Fraction of each delay that is randomized: the delay is drawn uniformly from
            ``[d * (1 - jitter), d]`` (0 = none, 1 = "full jitter").
    """

    max_attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts={self.max_attempts}; expected >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ConfigError(
                f"base_delay_s={self.base_delay_s}, max_delay_s={self.max_delay_s}; expected 0 <= base <= max"
            )
        if self.multiplier < 1.0:
            raise ConfigError(f"multiplier={self.multiplier}; expected >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(f"jitter={self.jitter}; expected in [0, 1]")

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay to sleep after failed call number ``attempt`` (1-based).

        Args:
            attempt: Number of the call that just failed.
            rng: Random source (``random`` module default when omitted).

        Returns:
            Seconds to wait.
        """
        nominal = min(self.max_delay_s, self.base_delay_s * self.multiplier ** max(0, attempt - 1))
        u = (rng or random).random()
        return nominal * (1.0 - self.jitter * u)

    def delays_s(self, rng: random.Random | None = None) -> Iterator[float]:
        """The ``max_attempts - 1`` delays between calls."""
        for attempt in range(1, self.max_attempts):
            yield self.delay_s(attempt, rng)


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy = RetryPolicy(),
    *,
    operation: str = "call",
    classify: Callable[[BaseException], ErrorClass] = classify_error,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Await ``fn()``; on a transient error sleep and call again, up to the policy's bound.

    Args:
        fn: Makes the attempt (called anew for each attempt).
        policy: Retry bounds and delays.
        operation: Name for logs.
        classify: Maps an error to its class; only ``transient`` is retried.
        on_retry: Called as ``(attempt, error, delay_s)`` before each sleep (metrics).
        rng: Random source for jitter.

    Returns:
        The first successful result.

    Raises:
        Exception: The first non-transient error, or the last transient one once attempts
            are exhausted. ``CancelledError`` always propagates.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as e:
            if classify(e) is not ErrorClass.TRANSIENT or attempt >= policy.max_attempts:
                raise
            delay_s = policy.delay_s(attempt, rng)
            logger.warning("%s failed (attempt %d/%d): %s; retrying in %.2f s", operation, attempt, policy.max_attempts, e, delay_s)
            if on_retry is not None:
                on_retry(attempt, e, delay_s)
            await asyncio.sleep(delay_s)
