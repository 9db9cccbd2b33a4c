"""The peer API server: a second aiohttp site on the LAN address; every request must be signed with the farm secret."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

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


def create_peer_app(agent: "Agent") -> web.Application:
    """The peer API application."""
    app = web.Application(middlewares=[require_farm_signature], client_max_size=MAX_REQUEST_BYTES)
    app[PEER_AGENT_KEY] = agent
    app.router.add_get("/peer/v1/status", status)
    return app
