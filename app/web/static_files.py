"""The dashboard's static assets, and a plain-text 404 naming anything that is not one of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from app.files import safe_relative

STATIC_PREFIX = "/static/"


def not_found(path: str) -> web.Response:
    """'404: not found: /static/x.css' as text/plain (the security headers are added by their middleware)."""
    return web.Response(text=f"404: not found: {path}", status=404, content_type="text/plain")


def static_handler(root: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that serves files under `root` by the path after /static/."""

    async def static_file(request: web.Request) -> web.StreamResponse:
        path = safe_relative(root, request.match_info["path"])
        if path is None or not path.is_file():
            return not_found(request.path)
        return web.FileResponse(path)

    return static_file


def add_static_route(app: web.Application, root: Path) -> None:
    """GET/HEAD /static/{path}."""
    app.router.add_get(STATIC_PREFIX + "{path:.*}", static_handler(root), name="static")
