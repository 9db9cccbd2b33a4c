"""The dashboard's JSON API under /api/v1/ (token or session required; see middlewares.api_auth)."""

from __future__ import annotations

from aiohttp import web

from app.web.keys import AGENT_KEY


async def status(request: web.Request) -> web.Response:
    """This agent's summary."""
    return web.json_response(request.app[AGENT_KEY].describe())


async def peers(request: web.Request) -> web.Response:
    """Peers seen on the LAN and manually, verified or not; other farms; clients not seen on the LAN."""
    agent = request.app[AGENT_KEY]
    return web.json_response(agent.peers_view(), dumps=_dumps)


def _dumps(value: object) -> str:
    from app.textui import to_json

    return to_json(value)


def add_routes(app: web.Application) -> None:
    """Register the API routes."""
    app.router.add_get("/api/v1/status", status, name="api_status")
    app.router.add_get("/api/v1/peers", peers, name="api_peers")
