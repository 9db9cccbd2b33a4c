"""SQL about clients: listing, and the seed's active-clients-with-task-counts query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import clients, task_assignments


async def get_client(conn: AsyncConnection, client_id: str) -> dict[str, Any] | None:
    """One client row, or None."""
    row = (await conn.execute(select(clients).where(clients.c.id == client_id))).first()
    return row_dict(row) if row else None


async def list_clients(conn: AsyncConnection, *, status: str | None = None) -> list[dict[str, Any]]:
    """Every client (optionally of one status), most recently seen first."""
    query = select(clients).order_by(clients.c.last_seen.desc(), clients.c.id)
    if status:
        query = query.where(clients.c.status == status)
    return [row_dict(row) for row in await conn.execute(query)]


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    """How many clients are active and inactive."""
    rows = await conn.execute(select(clients.c.status, func.count()).group_by(clients.c.status))
    return {status: int(count) for status, count in rows}


async def active_clients_with_task_counts(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The seed's "active clients with task counts": active_tasks and last_task_update per active client."""
    open_assignments = (
        select(
            task_assignments.c.client_id,
            func.count(func.distinct(task_assignments.c.task_id)).label("active_tasks"),
            func.max(task_assignments.c.updated_at).label("last_task_update"),
        )
        .where(task_assignments.c.status.in_(("assigned", "training")))
        .group_by(task_assignments.c.client_id)
        .subquery()
    )
    query = (
        select(
            clients,
            func.coalesce(open_assignments.c.active_tasks, 0).label("active_tasks"),
            open_assignments.c.last_task_update,
        )
        .select_from(clients.outerjoin(open_assignments, open_assignments.c.client_id == clients.c.id))
        .where(clients.c.status == "active")
        .order_by(clients.c.id)
    )
    out = []
    for row in await conn.execute(query):
        item = row_dict(row)
        item["active_tasks"] = int(item["active_tasks"])
        out.append(item)
    return out


async def upsert_client(
    conn: AsyncConnection,
    *,
    client_id: str,
    cpu_info: dict[str, Any],
    ram_info: dict[str, Any],
    gpu_info: list[dict[str, Any]],
    session_info: dict[str, Any],
    version: str,
    hostname: str,
) -> None:
    """Insert or refresh this machine's row, active and seen now."""
    values = {
        "cpu_info": cpu_info,
        "ram_info": ram_info,
        "gpu_info": gpu_info,
        "session_info": session_info,
        "version": version,
        "hostname": hostname,
        "status": "active",
        "last_seen": dialect.now(conn),
    }
    await conn.execute(dialect.upsert(conn, clients, {"id": client_id, **values}, values))


async def touch_client(conn: AsyncConnection, client_id: str) -> bool:
    """Heartbeat: last_seen = now and status active; False when the row no longer exists."""
    result = await conn.execute(
        update(clients).where(clients.c.id == client_id).values(last_seen=dialect.now(conn), status="active")
    )
    return result.rowcount > 0


async def set_client_status(conn: AsyncConnection, client_id: str, status: str) -> None:
    """Set a client's status (a clean stop marks it inactive)."""
    await conn.execute(update(clients).where(clients.c.id == client_id).values(status=status))


async def get_clients(conn: AsyncConnection, client_ids: list[str]) -> list[dict[str, Any]]:
    """The rows of these client ids (missing ids are simply absent)."""
    if not client_ids:
        return []
    query = select(clients.c.id, clients.c.status, clients.c.hostname, clients.c.session_info).where(
        clients.c.id.in_(client_ids)
    )
    return [row_dict(row) for row in await conn.execute(query)]


async def update_session_info(conn: AsyncConnection, client_id: str, session_info: dict[str, Any]) -> None:
    """Replace a client's session_info."""
    await conn.execute(update(clients).where(clients.c.id == client_id).values(session_info=session_info))


async def contributions(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    """Per client: compute hours (formed attempts it trained in, assignment start to last update), samples
    trained (from completed assignments' metrics) and tasks it completed a rank of."""
    from app.db.schema import tasks

    out: dict[str, dict[str, Any]] = {}
    rows = await conn.execute(
        select(task_assignments.c.client_id, task_assignments.c.assigned_at, task_assignments.c.updated_at,
               task_assignments.c.status, task_assignments.c.metrics, tasks.c.config)
        .select_from(task_assignments.join(tasks, tasks.c.id == task_assignments.c.task_id))
    )
    for row in rows:
        entry = out.setdefault(row.client_id, {"compute_hours": 0.0, "samples": 0, "tasks": 0})
        if row.status in ("training", "completed") and row.assigned_at and row.updated_at:
            entry["compute_hours"] += max(0.0, (row.updated_at - row.assigned_at).total_seconds()) / 3600
        metrics = row.metrics if isinstance(row.metrics, dict) else {}
        config = row.config if isinstance(row.config, dict) else {}
        if row.status == "completed":
            entry["tasks"] += 1
            entry["samples"] += int(metrics.get("step") or 0) * int(config.get("batch_size") or 0)
    return out
