"""Request guards and error mapping: Host check (DNS rebinding) and domain errors to HTTP."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web

from app.errors import AifarmError, Conflict, DatabaseUnavailable, NotFound, SchemaError, ValidationError
from app.web import security
from app.web.context import SESSION_KEY, base_context
from app.web.keys import ALLOWED_HOSTS_KEY, DEPS_KEY, SESSION_KEY_KEY

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
        return await _error_response(request, 403, "forbidden_host", "this dashboard only answers to its own address")
    return await handler(request)


PUBLIC_PREFIXES = ("/static/", "/login", "/healthz", "/favicon.ico")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CSP and the other hardening headers on every response, errors included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(security.SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(security.SECURITY_HEADERS)
    return response


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API: bearer token or session cookie (plus CSRF header to change anything); pages: session cookie
    (plus CSRF field on form posts). Only the login link, health check and static files are public."""
    deps = request.app[DEPS_KEY]
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if request.path.startswith("/api/") and scheme.lower() == "bearer":
        if hmac.compare_digest(value.strip().encode(), deps.api_token.encode()):
            return await handler(request)
        return await _error_response(request, 401, "unauthorized", "missing or wrong API token")
    session_key = request.app[SESSION_KEY_KEY].value
    session = security.check_session(session_key, request.cookies.get(security.SESSION_COOKIE))
    if session is None:
        if request.path.startswith("/api/"):
            return await _error_response(request, 401, "unauthorized", "missing or wrong API token")
        context = {**await base_context(request), "status": 401}
        return aiohttp_jinja2.render_template("errors/signin.html", request, context, status=401)
    request[SESSION_KEY] = session
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        token = request.headers.get(security.CSRF_HEADER)
        if token is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            posted = (await request.post()).get(security.CSRF_FIELD)
            token = posted if isinstance(posted, str) else None
        if not security.check_csrf(session_key, session, token if isinstance(token, str) else None):
            return await _error_response(request, 403, "csrf", "missing or wrong CSRF token; reload the page and try again")
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors become JSON (API) or an error page (HTML) with the right status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json" and exc.status != 405:
            return await _error_response(request, exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except AifarmError as exc:
        for kind, status, code in _STATUS:
            if isinstance(exc, kind):
                fields = exc.fields if isinstance(exc, ValidationError) else {}
                return await _error_response(request, status, code, str(exc), fields)
        log.warning("unmapped domain error on %s: %s", request.path, exc)
        return await _error_response(request, 500, "error", str(exc))


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


async def _error_response(
    request: web.Request, status: int, code: str, message: str, fields: dict[str, str] | None = None
) -> web.StreamResponse:
    if _wants_json(request):
        return web.json_response({"error": {"code": code, "message": message, "fields": fields or {}}}, status=status)
    context = {**await base_context(request), "status": status, "message": message}
    return aiohttp_jinja2.render_template("errors/error.html", request, context, status=status)
