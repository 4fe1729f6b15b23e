"""Errors raised by :mod:`ostinato.stream`.

Each error is classified (:class:`ErrorClass`): ``input`` (bad data: reject the item or
stream and keep going), ``transient`` (retry with backoff) or ``permanent`` (fail the
stream or run). Each carries a recovery ``hint``.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorClass", "StreamError"]


class ErrorClass(enum.StrEnum):
    """How the pipeline reacts to an error."""

    INPUT = "input"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class StreamError(Exception):
    """Base of every streaming error.

    Args:
        message: What went wrong, with the offending value.
        hint: What to do about it.
    """

    error_class: ErrorClass = ErrorClass.PERMANENT
    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (hint: {self.hint})" if self.hint else base
