"""The Overview page: this machine and the farm at a glance."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
import psutil
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from app import inventory
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import tasks as task_queries
from app.errors import DatabaseUnavailable
from app.web.keys import AGENT_KEY

LEADERBOARD_SIZE = 10
ACTIVITY_SIZE = 15


async def _machine(agent: Any) -> dict[str, Any]:
    """CPU, RAM and GPU use of this machine now."""
    memory = psutil.virtual_memory()
    gpus: list[dict[str, Any]] = []
    if agent.inventory.get("gpus"):
        gpus = await asyncio.to_thread(inventory.gpu_info)
    return {"cpu_percent": psutil.cpu_percent(interval=None), "cores": psutil.cpu_count() or 1,
            "ram_percent": memory.percent, "ram_used_mb": memory.used / 2**20, "ram_total_mb": memory.total / 2**20,
            "gpus": gpus}


@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    """This machine (donation, work, load), the farm (peers, clients, tasks, statistics), contributors, activity."""
    agent = request.app[AGENT_KEY]
    context: dict[str, Any] = {
        "agent": agent.describe(), "machine": await _machine(agent), "peers": agent.peers_view(),
        "tasks_by_status": {}, "clients_by_status": {}, "statistics": [], "leaderboard": [], "activity": [],
        "hostnames": {}, "db_error": None,
    }
    try:
        async with agent.db.connect() as conn:
            context["tasks_by_status"] = await task_queries.count_by_status(conn)
            context["clients_by_status"] = await client_queries.count_by_status(conn)
            context["statistics"] = await task_queries.completion_statistics(conn)
            clients = await client_queries.list_clients(conn)
            contributions = await client_queries.contributions(conn)
            context["activity"] = await log_queries.recent_client_logs(conn, None, ACTIVITY_SIZE)
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        context["db_error"] = f"database unreachable: {exc}"
        return context
    context["hostnames"] = {row["id"]: row.get("hostname") for row in clients}
    board = [{"client_id": cid, "hostname": context["hostnames"].get(cid), **c} for cid, c in contributions.items()]
    board.sort(key=lambda e: (-e["compute_hours"], -e["samples"], -e["tasks"], e["client_id"]))
    context["leaderboard"] = board[:LEADERBOARD_SIZE]
    return context


async def healthz(request: web.Request) -> web.Response:
    """Liveness for scripts and installers: 200 with the agent's summary."""
    return web.json_response({"ok": True, **request.app[AGENT_KEY].describe()})
