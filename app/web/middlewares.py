"""Request guards and error mapping: Host check (DNS rebinding) and domain errors to HTTP."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web

from app.errors import AifarmError, Conflict, DatabaseUnavailable, NotFound, SchemaError, ValidationError
from app.web.keys import AGENT_KEY, ALLOWED_HOSTS_KEY

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS: list[tuple[type[AifarmError], int, str]] = [
    (ValidationError, 400, "invalid"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (DatabaseUnavailable, 503, "database_unavailable"),
    (SchemaError, 503, "schema"),
]


def host_without_port(host: str) -> str:
    """'127.0.0.1' from '127.0.0.1:8470', '[::1]' from '[::1]:8470'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@web.middleware
async def host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 unless the Host header names this agent (a DNS-rebinding page cannot reach the dashboard)."""
    allowed = request.app[ALLOWED_HOSTS_KEY]
    if host_without_port(request.headers.get("Host", "")) not in allowed:
        return _error_response(request, 403, "forbidden_host", "this dashboard only answers to its own address")
    return await handler(request)


@web.middleware
async def api_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """/api/ needs `Authorization: Bearer <token>` (the data dir's api_token file)."""
    if request.path.startswith("/api/"):
        token = request.app[AGENT_KEY].api_token
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return _error_response(request, 401, "unauthorized", "missing or wrong API token")
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors become JSON (API) or an error page (HTML) with the right status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json" and exc.status != 405:
            return _error_response(request, exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except AifarmError as exc:
        for kind, status, code in _STATUS:
            if isinstance(exc, kind):
                fields = exc.fields if isinstance(exc, ValidationError) else {}
                return _error_response(request, status, code, str(exc), fields)
        log.warning("unmapped domain error on %s: %s", request.path, exc)
        return _error_response(request, 500, "error", str(exc))


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def _error_response(
    request: web.Request, status: int, code: str, message: str, fields: dict[str, str] | None = None
) -> web.StreamResponse:
    if _wants_json(request):
        return web.json_response({"error": {"code": code, "message": message, "fields": fields or {}}}, status=status)
    return aiohttp_jinja2.render_template(
        "errors/error.html", request, {"status": status, "message": message}, status=status
    )
