"""The peer API server: a second aiohttp site on the LAN address; every request must be signed with the farm secret."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from app.files import safe_relative
from app.peerapi import auth

if TYPE_CHECKING:
    from app.agent import Agent

log = logging.getLogger(__name__)

PEER_AGENT_KEY: web.AppKey["Agent"] = web.AppKey("peer_agent")
MAX_REQUEST_BYTES = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unauthorized(message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": "unauthorized", "message": message, "fields": {}}},
        status=401,
        headers={"WWW-Authenticate": auth.SCHEME},
    )


@web.middleware
async def require_farm_signature(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 unless the request carries a fresh HMAC signature made with this farm's secret."""
    agent = request.app[PEER_AGENT_KEY]
    secret = agent.farm_secret
    if secret is None:
        return web.json_response(
            {"error": {"code": "not_ready", "message": "this agent has no farm secret yet", "fields": {}}}, status=503
        )
    sender = auth.verify(secret, request.headers.get("Authorization"), request.method, request.path_qs)
    if sender is None:
        return _unauthorized("missing or invalid farm signature")
    log.debug("peer API %s %s from %s", request.method, request.path, sender)
    return await handler(request)


async def status(request: web.Request) -> web.Response:
    """Who this agent is and where it listens."""
    return web.json_response(request.app[PEER_AGENT_KEY].peer_status())


SERVED_ROOTS = ("checkpoints", "models", "fetched")


async def get_file(request: web.Request) -> web.StreamResponse:
    """A checkpoint or model file of this agent's data dir (its own, or a verified copy it holds under fetched/);
    nothing outside those folders, no traversal."""
    agent = request.app[PEER_AGENT_KEY]
    relative = request.match_info["path"]
    if relative.split("/", 1)[0] not in SERVED_ROOTS:
        raise web.HTTPNotFound(reason="not a served file")
    path = safe_relative(agent.settings.data_dir, relative)
    if path is None:
        raise web.HTTPBadRequest(reason="invalid file name")
    if not path.is_file():
        raise web.HTTPNotFound(reason="no such file")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def replicate(request: web.Request) -> web.Response:
    """Fetch a model file from the peer that asks, verify its sha256, and keep a copy."""
    agent = request.app[PEER_AGENT_KEY]
    try:
        body = await request.json()
    except (ValueError, RecursionError, LookupError):  # bad JSON or UTF-8, huge numbers, deep nesting, unknown charset
        raise web.HTTPBadRequest(reason="body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not isinstance(body.get("sha256"), str) \
            or not isinstance(body.get("client_id"), str) or not body["path"].startswith("models/"):
        raise web.HTTPBadRequest(reason="expected client_id, path (models/...) and sha256")
    path = await agent.fetch_checkpoint(body["client_id"], body["path"], body["sha256"])
    if path is None:
        return web.json_response({"ok": False, "error": "could not fetch or verify the file"}, status=502)
    return web.json_response({"ok": True})


def create_peer_app(agent: "Agent") -> web.Application:
    """The peer API application."""
    app = web.Application(middlewares=[require_farm_signature], client_max_size=MAX_REQUEST_BYTES)
    app[PEER_AGENT_KEY] = agent
    app.router.add_get("/peer/v1/status", status)
    app.router.add_get("/peer/v1/files/{path:.+}", get_file)
    app.router.add_post("/peer/v1/replicate", replicate)
    return app
