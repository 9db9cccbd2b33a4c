"""The dashboard application factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
from aiohttp import web

from app.paths import static_dir, templates_dir
from app.web import api, middlewares, pages, static_files
from app.web.cache import TTLCache
from app.web.context import base_context
from app.web.keys import ALLOWED_HOSTS_KEY, CACHE_KEY, DEPS_KEY, LIVE_KEY, SESSION_KEY_KEY
from app.web.live import LiveFeed
from app.web.security import SessionKey
from app.web.views import overview, session

if TYPE_CHECKING:
    from app.web.deps import DashboardDeps

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
FARM_DATA_TTL = 1.0  # seconds a farm-wide summary is reused; live updates refresh every 2 s anyway


async def _close_live_feed(app: web.Application) -> None:
    await app[LIVE_KEY].close()


def create_dashboard_app(deps: "DashboardDeps") -> web.Application:
    """The dashboard: pages, static assets and API routes, behind the Host check."""
    app = web.Application(middlewares=[middlewares.security_headers, middlewares.host_check, middlewares.errors, middlewares.auth])
    app[DEPS_KEY] = deps
    app[ALLOWED_HOSTS_KEY] = LOOPBACK_NAMES | {deps.settings.dashboard_host.lower()}
    app[CACHE_KEY] = TTLCache(FARM_DATA_TTL)
    app[LIVE_KEY] = LiveFeed(deps.db, lambda: {"agent": deps.describe(), "peers": deps.peers_view()})
    app.on_shutdown.append(_close_live_feed)
    app[SESSION_KEY_KEY] = SessionKey(deps.settings.data_dir)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html", "xml"], default=True),
        context_processors=[base_context],
    )
    app.router.add_get("/login", session.login, name="login")
    app.router.add_post("/logout", session.logout, name="logout")
    app.router.add_post("/settings/sign-out-everywhere", session.sign_out_everywhere, name="sign_out_everywhere")
    app.router.add_get("/", overview.overview, name="overview")
    app.router.add_get("/healthz", overview.healthz, name="healthz")
    api.add_routes(app)
    pages.add_page_routes(app)
    static_files.add_static_route(app, static_dir())
    return app
