"""CORS for the REST and WebSocket endpoints (``ostinato serve --cors-origin ORIGIN``).

By default the service is same-origin only: a page served elsewhere can neither read REST
answers (no ``Access-Control-Allow-Origin``) nor open the WebSocket (the Origin check of
:mod:`ostinato.auth`). Each ``--cors-origin`` (exact ``scheme://host[:port]``, or ``*``) may do
both: its preflight ``OPTIONS`` requests are answered here, before authentication (a
preflight never carries the token), and every response to it carries the CORS headers.
WebSockets have no preflight; a CORS origin passes their Origin check. No credentials mode:
browsers send the token in the ``Authorization`` header, which the preflight allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["ALLOWED_HEADERS", "ALLOWED_METHODS", "cors_middleware"]

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"
_MAX_AGE_S = 600


def _allowed(origin: str | None, origins: frozenset[str]) -> bool:
    return origin is not None and ("*" in origins or origin in origins)


def _decorate(response: web.StreamResponse, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = "Content-Type, Content-Disposition"
    vary = response.headers.get("Vary", "")
    if "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def cors_middleware(origins: frozenset[str]) -> Any:
    """Build the middleware (outermost: it must answer preflights before auth).

    Args:
        origins: Allowed browser origins (``*``: any); empty: same-origin only (no CORS).
    """

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not _allowed(origin, origins):
            return await handler(request)
        assert origin is not None
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            preflight = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": ALLOWED_METHODS, "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": str(_MAX_AGE_S)})
            _decorate(preflight, origin)
            return preflight
        try:
            response = await handler(request)
        except web.HTTPException as e:
            _decorate(e, origin)
            raise
        if not response.prepared:  # a WebSocket or stream already sent its headers
            _decorate(response, origin)
        return response

    return middleware
