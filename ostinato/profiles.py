"""Deployment profiles: named sets of defaults for ``ostinato run``, ``serve`` and ``plan``.

``--profile edge`` is for one small CPU core (aarch64 boards, a container limited to one core):
one inference session with one intra-op thread, no batching, windows of 0.5 s new audio with
0.5 s past and 0.24 s future context (1.24 s, 2.5x recomputation instead of the default's 4x),
short queues and a shorter matcher history (bounded memory). Measured figures: ``docs/edge.md``.

``--profile low-latency`` is for many live streams on models with the K/V cache
(``encoder_cached.onnx``): windows of 0.5 s new audio with 2 s past and no future context, so a
frame waits for nothing beyond its own hop (5 ms added latency instead of the default's 485 ms)
and the transformer runs only the hop's 25 frames per window (the default: 49). With the K/V
cache the left context is nearly free, and on random:base its fidelity (streamed vs offline)
is close to the default's; without the cache every window runs 2.5 s through the transformer.
Measured figures: ``docs/streaming.md`` ("Real-time capacity").

Options given explicitly on the command line always win over the profile.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

__all__ = ["PROFILES", "Profile", "apply_profile", "profile_names"]


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """Defaults one profile sets; ``None`` leaves the command's own default.

    Args:
        name: Profile name (``--profile NAME``).
        hop_s: New audio per window.
        left_context_s: Past context per window.
        right_context_s: Future context per window (adds latency).
        batch_size: Windows per model run.
        workers: Inference sessions.
        threads: Intra-op threads per session.
        max_queue: Windows queued per stream before backpressure or drops.
        max_lag_s: Live windows older than this are dropped (counted) instead of building lag.
        match_buffer_s: Audio history the matcher searches per stream.
        max_streams: Concurrent streams a server accepts.
    """

    name: str
    hop_s: float | None = None
    left_context_s: float | None = None
    right_context_s: float | None = None
    batch_size: int | None = None
    workers: int | None = None
    threads: int | None = None
    max_queue: int | None = None
    max_lag_s: float | None = None
    match_buffer_s: float | None = None
    max_streams: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self)[1:]:
            value = getattr(self, field.name)
            if value is not None and not value > 0 and not (field.name.endswith("context_s") and value == 0):
                raise ValueError(f"profile {self.name!r}: {field.name}={value!r}; expected a positive number")


PROFILES: dict[str, Profile] = {
    "default": Profile("default"),  # every command's own defaults
    "edge": Profile("edge", hop_s=0.5, left_context_s=0.5, right_context_s=0.24, batch_size=1, workers=1,
                    threads=1, max_queue=4, max_lag_s=3.0, match_buffer_s=120.0, max_streams=4),
    "low-latency": Profile("low-latency", hop_s=0.5, left_context_s=2.0, right_context_s=0.0, max_lag_s=2.0),
}


def profile_names() -> tuple[str, ...]:
    """The ``--profile`` choices."""
    return tuple(PROFILES)


def apply_profile(
    args: argparse.Namespace, name: str, mapping: dict[str, str], defaults: dict[str, Any] | None = None
) -> Profile:
    """Fill the options the user left unset (``None``) from profile ``name``.

    Args:
        args: Parsed arguments; only attributes that are ``None`` are set, and only where the
            profile has a value (the command then applies its own defaults to the rest).
        name: Profile name.
        mapping: ``{args attribute: Profile field}`` for the options this command has.
        defaults: ``{args attribute: value}``: the command's own defaults, for what is still unset.

    Returns:
        The profile.

    Raises:
        ValueError: On an unknown profile name.
    """
    if name not in PROFILES:
        raise ValueError(f"--profile {name!r}; expected one of {list(PROFILES)}")
    profile = PROFILES[name]
    for attr, field in mapping.items():
        if getattr(args, attr, None) is None and getattr(profile, field) is not None:
            setattr(args, attr, getattr(profile, field))
    for attr, value in (defaults or {}).items():
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)
    return profile
