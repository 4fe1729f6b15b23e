"""Service limits and the per-connection message-rate limiter.

Every resource a network peer can make the service spend is bounded here: message and
upload sizes, audio per message, concurrent streams, message rate, and the time a peer may
stay silent. The values are validated once, at start-up, in :class:`ServiceLimits`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

__all__ = ["ServiceLimits", "TokenBucket"]


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Bounds the service enforces on every peer.

    Args:
        max_message_bytes: Largest WebSocket message accepted; a larger one (up to
            ``hard_message_bytes``) is answered with an ``error`` frame and dropped.
        hard_message_bytes: Largest message the WebSocket reader buffers at all; beyond it the
            connection is closed (code 1009), because the rest of the message cannot be skipped.
        max_audio_s_per_message: Most audio one ``audio`` frame may carry.
        max_streams: Concurrent WebSocket streams.
        max_messages_per_s: Sustained message rate per connection; beyond it the server stops
            reading that socket (TCP pushes back) and tells the peer once.
        message_burst: Messages a connection may send at once before the rate applies.
        max_upload_bytes: Largest ``POST /v1/features`` body.
        max_upload_audio_s: Longest audio an upload may decode to.
        upload_timeout_s: Time allowed to receive an upload body (slow senders get 408).
        idle_timeout_s: A stream with no message for this long gets ``bye`` (reason ``idle``).
        hello_timeout_s: Time a new WebSocket has to send ``hello``.
        header_timeout_s: Time an HTTP connection has to complete a request's headers
            (slowloris); also the keep-alive time of idle HTTP connections.
        resume_grace_s: How long a disconnected stream waits for its client to resume it.
        status_interval_s: Period of ``status`` frames for streams that asked for them.
        max_send_queue: Frames queued toward one slow client before the oldest status/features
            frames are dropped (events are never dropped).
        heartbeat_s: WebSocket ping period; a peer that does not answer within half of it is
            dropped (so a dead connection frees its stream for a resume within ``1.5 *`` this).
        replay_frames: Output frames (event/features/status) each stream keeps after sending,
            so a resuming client can get the ones it missed (``hello.last_output_seq``).
        replay_bytes: Byte bound of that replay buffer (features frames are large).
    """

    max_message_bytes: int = 1024 * 1024
    hard_message_bytes: int = 4 * 1024 * 1024
    max_audio_s_per_message: float = 2.0
    max_streams: int = 64
    max_messages_per_s: float = 200.0
    message_burst: int = 400
    max_upload_bytes: int = 32 * 1024 * 1024
    max_upload_audio_s: float = 600.0
    upload_timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    hello_timeout_s: float = 10.0
    header_timeout_s: float = 15.0
    resume_grace_s: float = 30.0
    status_interval_s: float = 1.0
    max_send_queue: int = 256
    heartbeat_s: float = 10.0
    replay_frames: int = 256
    replay_bytes: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{field.name}={value!r}; expected a finite number")
            # A grace of 0 turns resuming off; every other bound must be positive.
            if value < 0 or (value == 0 and field.name != "resume_grace_s"):
                raise ValueError(f"{field.name}={value!r}; expected > 0")
        if self.hard_message_bytes < self.max_message_bytes:
            raise ValueError(
                f"hard_message_bytes={self.hard_message_bytes} < max_message_bytes={self.max_message_bytes}; "
                "expected hard >= soft"
            )
        if self.message_burst < 1:
            raise ValueError(f"message_burst={self.message_burst}; expected >= 1")


class TokenBucket:
    """Classic token bucket (sans-IO, injectable clock): ``rate_per_s`` sustained, ``burst`` peak.

    Args:
        rate_per_s: Tokens added per second.
        burst: Bucket capacity (and initial content).
        clock: Monotonic clock in seconds.
    """

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate_per_s={rate_per_s}, burst={burst}; expected rate > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp_s = clock()

    def take(self) -> float:
        """Take one token.

        Returns:
            0.0 when a token was available (and taken); otherwise the seconds to wait until one
            will be (nothing is taken then).
        """
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp_s) * self.rate_per_s)
        self._stamp_s = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s
