"""The Operations page: when each maintenance sweep last ran and what it did, database size and slow queries,
and this machine's view of the database."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from app.agentlog import log_path, tail
from app.errors import DatabaseUnavailable
from app.operations import monitor
from app.web.keys import DEPS_KEY

LOG_LINES = 200


@aiohttp_jinja2.template("operations.html")
async def operations_page(request: web.Request) -> dict[str, Any]:
    """Sweeps, monitoring and the agent's view, each shown even when another part is unavailable."""
    deps = request.app[DEPS_KEY]
    context: dict[str, Any] = {"sweeps": [], "stats": None, "view": None, "error": None,
                               "backlog": deps.write_backlog(),
                               "log_path": log_path(deps.settings.data_dir),
                               "log_lines": await asyncio.to_thread(tail, log_path(deps.settings.data_dir), LOG_LINES)}
    try:
        maintenance = deps.maintenance()
        if maintenance is not None:
            context["sweeps"] = await maintenance.history()
        context["stats"] = await monitor.database_stats(deps.db)
        context["view"] = await monitor.agent_view(deps.db)
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        context["error"] = f"database unreachable: {exc}"
    return context
