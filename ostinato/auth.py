"""Bearer-token authentication and browser Origin checks for the service.

Programs send ``Authorization: Bearer <token>``. Browsers cannot put that header on a
WebSocket, so the dashboard is opened once as ``/?token=…``: the server checks it, stores it
in an ``HttpOnly; SameSite=Strict`` cookie and redirects to ``/`` (the token leaves the URL).
Tokens are compared in constant time (:func:`hmac.compare_digest`). Because a cookie travels
with cross-site requests a page makes, every WebSocket upgrade and every state-changing
request that carries an ``Origin`` header must come from the service's own origin or an
explicitly allowed one (cross-site WebSocket hijacking, CSRF).
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ostinato.errors import AuthError

__all__ = [
    "COOKIE_NAME",
    "PUBLIC_PATHS",
    "auth_middleware",
    "load_token",
    "origin_allowed",
    "request_token",
    "token_matches",
]

logger = logging.getLogger(__name__)

#: Cookie holding the dashboard's token.
COOKIE_NAME = "ostinato_token"
#: Paths served without a token (liveness probes must not need secrets).
PUBLIC_PATHS = frozenset({"/healthz"})
_MIN_TOKEN_CHARS = 16
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def load_token(path: str | Path) -> str:
    """Read a bearer token from a file (surrounding whitespace stripped).

    Args:
        path: File holding the token.

    Returns:
        The token.

    Raises:
        AuthError: If the file is missing, unreadable or holds a token shorter than 16 characters.
    """
    p = Path(path)
    gen = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE"
    try:
        token = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise AuthError(f"cannot read token file {str(p)!r}: {e}", hint=f"create it: {gen}", code="bad_token_file") from e
    if len(token) < _MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise AuthError(
            f"token file {str(p)!r} holds {len(token)} characters (or whitespace inside); expected "
            f">= {_MIN_TOKEN_CHARS} non-blank characters",
            hint=f"generate one: {gen}",
            code="bad_token_file",
        )
    if os.name == "posix" and p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("token file %s is readable by other users; chmod 600 it", p)
    return token


def token_matches(presented: str | None, expected: str) -> bool:
    """Compare a presented token with the expected one in constant time.

    Args:
        presented: What the peer sent (``None`` when nothing was sent).
        expected: The configured token.

    Returns:
        True when they are equal.
    """
    if presented is None:
        # Still run a comparison so a missing token takes as long as a wrong one.
        hmac.compare_digest(expected.encode(), expected.encode()[::-1])
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def request_token(request: web.BaseRequest) -> str | None:
    """The token a request carries: bearer header first, then the dashboard cookie.

    Args:
        request: The request.

    Returns:
        The presented token, or ``None``.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie or None


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether a request's ``Origin`` may use the service.

    Requests without ``Origin`` come from programs, not browsers, and are left to token auth.
    A browser origin must match the ``Host`` the request was sent to (same origin), or be
    listed in ``allowed`` (``"*"`` allows every origin).

    Args:
        origin: The ``Origin`` header (``None`` when absent).
        host: The ``Host`` header.
        allowed: Extra origins such as ``"https://dash.example.org"``.

    Returns:
        True when allowed.
    """
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    parsed = urllib.parse.urlsplit(origin)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or not host:
        return False  # "null" (sandboxed frames, file://) and garbage never match
    return parsed.netloc.lower() == host.lower()


def auth_middleware(token: str | None, allowed_origins: frozenset[str]) -> Any:
    """Build the middleware that enforces the token and the Origin rule.

    Args:
        token: Required bearer token, or ``None`` to disable token auth.
        allowed_origins: Extra allowed browser origins.

    Returns:
        An aiohttp middleware. Refusals raise :class:`~ostinato.errors.AuthError`, which the
        error middleware renders as 401/403 problem bodies.
    """

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if (is_ws or request.method not in _SAFE_METHODS) and not origin_allowed(
            request.headers.get("Origin"), request.host, allowed_origins
        ):
            raise AuthError(
                f"Origin {request.headers.get('Origin')!r} may not use this service (served at {request.host!r})",
                hint="open the dashboard from the server itself, or start it with --allow-origin ORIGIN",
                code="origin_forbidden",
                status=403,
            )
        if token is None:
            return await handler(request)
        if request.path == "/" and "token" in request.query:
            return _dashboard_login(request, token)
        if not token_matches(request_token(request), token):
            raise AuthError("missing or wrong bearer token")
        return await handler(request)

    return middleware


def _dashboard_login(request: web.Request, token: str) -> web.StreamResponse:
    if not token_matches(request.query.get("token"), token):
        raise AuthError("wrong token in the dashboard URL", hint="open /?token=<the token from --token-file>")
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="Strict", path="/", secure=request.secure)
    return response
