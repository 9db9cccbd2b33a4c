"""The Overview page: this machine and the farm at a glance."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
import psutil
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from app.client_labels import client_labels
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import tasks as task_queries
from app.errors import DatabaseUnavailable
from app.web.keys import CACHE_KEY, DEPS_KEY

LEADERBOARD_SIZE = 10
ACTIVITY_SIZE = 15


async def _machine(deps: Any) -> dict[str, Any]:
    """CPU, RAM and GPU use of this machine now."""
    memory = psutil.virtual_memory()
    gpus = list(deps.inventory.get("gpus") or [])  # refreshed every few seconds by the agent
    return {"cpu_percent": psutil.cpu_percent(interval=None), "cores": psutil.cpu_count() or 1,
            "ram_percent": memory.percent, "ram_used_mb": memory.used / 2**20, "ram_total_mb": memory.total / 2**20,
            "gpus": gpus}


@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    """This machine (donation, work, load), the farm (peers, clients, tasks, statistics), contributors, activity."""
    deps = request.app[DEPS_KEY]
    context: dict[str, Any] = {
        "agent": deps.describe(), "machine": await _machine(deps), "peers": deps.peers_view(),
        "tasks_by_status": {}, "clients_by_status": {}, "statistics": [], "leaderboard": [], "activity": [],
        "hostnames": {}, "db_error": None,
    }
    async def farm() -> dict[str, Any]:
        async with deps.db.connect() as conn:
            data: dict[str, Any] = {
                "tasks_by_status": await task_queries.count_by_status(conn),
                "clients_by_status": await client_queries.count_by_status(conn),
                "statistics": await task_queries.completion_statistics(conn),
                "contributions": await client_queries.contributions(conn, limit=LEADERBOARD_SIZE),
                "activity": await log_queries.recent_client_logs(conn, None, ACTIVITY_SIZE),
            }
            ids = list(data["contributions"]) + [row["client_id"] for row in data["activity"] if row.get("client_id")]
            data["hostnames"] = client_labels(await client_queries.hostnames(conn, ids))
        return data

    try:
        data = await request.app[CACHE_KEY].get("overview", farm)
        contributions = data["contributions"]
        context.update({k: v for k, v in data.items() if k != "contributions"})
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        context["db_error"] = f"database unreachable: {exc}"
        return context
    board = [{"client_id": cid, "hostname": context["hostnames"].get(cid), **c} for cid, c in contributions.items()]
    board.sort(key=lambda e: (-e["compute_hours"], -e["samples"], -e["tasks"], e["client_id"]))
    context["leaderboard"] = board[:LEADERBOARD_SIZE]
    return context


async def healthz(request: web.Request) -> web.Response:
    """Liveness for scripts and installers: 200 with the agent's summary."""
    return web.json_response({"ok": True, **request.app[DEPS_KEY].describe()})
