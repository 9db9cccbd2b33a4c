"""Signing in with a one-time link, signing out, and signing out every browser at once."""

from __future__ import annotations

import logging

import aiohttp_jinja2
from aiohttp import web

from app.web import security
from app.web.context import base_context
from app.web.keys import DEPS_KEY, SESSION_KEY_KEY

log = logging.getLogger(__name__)


async def login(request: web.Request) -> web.StreamResponse:
    """Exchange a one-time link for a session cookie (HttpOnly, SameSite=Strict), then go to `next` on this site."""
    deps = request.app[DEPS_KEY]
    if not deps.login_links.redeem(request.query.get("token")):
        context = {**await base_context(request), "status": 403, "expired": True}
        return aiohttp_jinja2.render_template("errors/signin.html", request, context, status=403)
    response = web.HTTPSeeOther(security.safe_next(request.query.get("next")))
    response.set_cookie(security.SESSION_COOKIE, security.make_session(request.app[SESSION_KEY_KEY].value),
                        max_age=security.SESSION_MAX_AGE, httponly=True, samesite="Strict", path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """Sign this browser out: its session cookie is cleared."""
    return await _signed_out(request, everywhere=False)


async def sign_out_everywhere(request: web.Request) -> web.StreamResponse:
    """Rotate the session key: every browser's session ends, copies of cookies included; the API token still works."""
    request.app[SESSION_KEY_KEY].rotate()
    log.info("dashboard session key rotated: every browser is signed out")
    return await _signed_out(request, everywhere=True)


async def _signed_out(request: web.Request, *, everywhere: bool) -> web.StreamResponse:
    context = {**await base_context(request), "csrf_token": "", "status": 200, "signed_out": True, "everywhere": everywhere}
    response = aiohttp_jinja2.render_template("errors/signin.html", request, context, status=200)
    response.del_cookie(security.SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    response.headers["Cache-Control"] = "no-store"
    return response
