"""The dashboard application factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
from aiohttp import web

from app.paths import static_dir, templates_dir
from app.web import api, middlewares
from app.web.keys import AGENT_KEY, ALLOWED_HOSTS_KEY
from app.web.views import overview

if TYPE_CHECKING:
    from app.agent import Agent

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def create_dashboard_app(agent: "Agent") -> web.Application:
    """The dashboard: pages, static assets and API routes, behind the Host check."""
    app = web.Application(middlewares=[middlewares.host_check, middlewares.errors, middlewares.api_auth])
    app[AGENT_KEY] = agent
    app[ALLOWED_HOSTS_KEY] = LOOPBACK_NAMES | {agent.settings.dashboard_host.lower()}
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html", "xml"], default=True),
    )
    app.router.add_get("/", overview.overview, name="overview")
    app.router.add_get("/healthz", overview.healthz, name="healthz")
    api.add_routes(app)
    app.router.add_static("/static/", static_dir(), name="static")
    return app
