"""The About page: this product's version and licence, its dependencies' notices, and where its data lives."""

from __future__ import annotations

import asyncio

import aiohttp_jinja2
from aiohttp import web

from app.notices import about
from app.web.keys import DEPS_KEY


async def about_page(request: web.Request) -> web.Response:
    """Version, licence, third-party notices (name, version, licence of each runtime dependency) and the data dir."""
    deps = request.app[DEPS_KEY]
    info = await asyncio.to_thread(about)  # reads package metadata from disk
    context = {"about": info, "data_dir": str(deps.settings.data_dir)}
    return aiohttp_jinja2.render_template("about.html", request, context)
