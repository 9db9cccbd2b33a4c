"""The Overview page: this machine and the farm at a glance."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from app.db.queries import clients as client_queries
from app.db.queries import tasks as task_queries
from app.errors import DatabaseUnavailable
from app.web.keys import AGENT_KEY


@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    """This machine's identity and the farm's counts."""
    agent = request.app[AGENT_KEY]
    context: dict[str, Any] = {"agent": agent.describe(), "tasks_by_status": {}, "clients_by_status": {}, "db_error": None}
    try:
        async with agent.db.connect() as conn:
            context["tasks_by_status"] = await task_queries.count_by_status(conn)
            context["clients_by_status"] = await client_queries.count_by_status(conn)
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        context["db_error"] = f"database unreachable: {exc}"
    return context


async def healthz(request: web.Request) -> web.Response:
    """Liveness for scripts and installers: 200 with the agent's summary."""
    return web.json_response({"ok": True, **request.app[AGENT_KEY].describe()})
