"""Typed application keys shared by the web modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from app.web.cache import TTLCache
    from app.web.deps import DashboardDeps
    from app.web.live import LiveFeed
    from app.web.security import SessionKey

DEPS_KEY: web.AppKey["DashboardDeps"] = web.AppKey("dashboard_deps")
ALLOWED_HOSTS_KEY: web.AppKey[frozenset[str]] = web.AppKey("allowed_hosts", frozenset)
CACHE_KEY: web.AppKey["TTLCache"] = web.AppKey("farm_cache")
LIVE_KEY: web.AppKey["LiveFeed"] = web.AppKey("live_feed")
SESSION_KEY_KEY: web.AppKey["SessionKey"] = web.AppKey("session_key")
