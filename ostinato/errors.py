"""Errors of the network service and its client.

They extend :class:`~ostinato.stream.errors.StreamError`, so each carries an error class
(``input`` | ``transient`` | ``permanent``) and a recovery ``hint``, and the CLI shows them as
``error: …`` + ``hint: …``. The service turns them into HTTP problem bodies or ``error``
frames; the client rebuilds them from what the server sent (:func:`error_from_wire`).
"""

from __future__ import annotations

from ostinato.stream.errors import ErrorClass, StreamError

__all__ = [
    "AuthError",
    "ClientError",
    "ConnectTimeoutError",
    "ModelBusyError",
    "ModelConfigError",
    "ModelUnavailableError",
    "ServerClosedError",
    "ServerError",
    "ServiceError",
    "TooManyStreamsError",
    "error_from_wire",
]


class ServiceError(StreamError):
    """Base of the service's own errors.

    Args:
        message: What went wrong, with the offending value.
        hint: What to do about it.
        code: Machine-readable code sent to the peer (``invalid_config``, ``too_many_streams``…).
        status: HTTP status used when the error answers a REST request.
    """

    code = "service_error"
    status = 500

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ModelConfigError(ServiceError, ValueError):
    """A model configuration (``POST /v1/models``) is invalid; ``field`` names the bad field.

    Args:
        field: Dotted path of the offending field (``parameters.attentionDropout``).
        reason: Why the value is refused, with the allowed values or range.
    """

    error_class = ErrorClass.INPUT
    code = "invalid_config"
    status = 422
    default_hint = "fix the named field; GET /v1/openapi.json describes the model config schema"

    def __init__(self, field: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {reason}", hint=hint)
        self.field = field
        self.reason = reason


class ModelUnavailableError(ServiceError, LookupError):
    """The named model is not loaded (or was never configured)."""

    error_class = ErrorClass.INPUT
    code = "model_unavailable"
    status = 404
    default_hint = "GET /v1/models lists the models; POST /v1/models loads one"


class ModelBusyError(ServiceError, RuntimeError):
    """A lifecycle change conflicts with the model's state (streams still use it, limit reached)."""

    error_class = ErrorClass.TRANSIENT
    code = "model_busy"
    status = 409
    default_hint = "end the streams using the model first, or pass ?force=true to unload anyway"


class TooManyStreamsError(ServiceError, RuntimeError):
    """The service already runs its maximum number of concurrent streams."""

    error_class = ErrorClass.TRANSIENT
    code = "too_many_streams"
    status = 503
    default_hint = "retry later with backoff, or start the server with a higher --max-streams"


class AuthError(ServiceError, PermissionError):
    """Missing or wrong bearer token, or a browser Origin that is not allowed."""

    error_class = ErrorClass.PERMANENT
    code = "unauthorized"
    status = 401
    default_hint = "send 'Authorization: Bearer <token>' with the token from the server's --token-file"


class ClientError(StreamError):
    """Base of the errors raised by :mod:`ostinato.client`.

    Args:
        message: What went wrong.
        hint: What to do about it.
        code: The server's error code, when the server sent one.
        error_class: ``input``, ``transient`` or ``permanent``.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, code: str = "client_error",
        error_class: ErrorClass | str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        if error_class is not None:
            # Instance attribute shadows the class default: the server decides the class.
            self.error_class = ErrorClass(error_class)


class ServerError(ClientError):
    """The server answered with an ``error`` frame or an HTTP problem body."""


class ConnectTimeoutError(ClientError, TimeoutError):
    """The server did not accept the connection (or answer ``hello``) within the timeout."""

    error_class = ErrorClass.TRANSIENT
    default_hint = "check that `ostinato serve` runs at that address; the client retries with backoff"


class ServerClosedError(ClientError, ConnectionError):
    """The connection closed without a ``bye`` (network loss, server crash or restart)."""

    error_class = ErrorClass.TRANSIENT
    default_hint = "the client reconnects and resumes the stream within the server's grace period"


def error_from_wire(code: str, message: str, error_class: str, hint: str = "") -> ServerError:
    """Rebuild a typed error from what a server sent (``error`` frame or HTTP problem body).

    Args:
        code: Server error code.
        message: Server message.
        error_class: ``input``, ``transient`` or ``permanent`` (anything else reads as permanent).
        hint: Server recovery hint.

    Returns:
        A :class:`ServerError` carrying the server's class and hint.
    """
    try:
        klass = ErrorClass(error_class)
    except ValueError:
        klass = ErrorClass.PERMANENT
    return ServerError(f"server error {code}: {message}", hint=hint, code=code, error_class=klass)
