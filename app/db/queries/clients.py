"""SQL about clients: listing, and the seed's active-clients-with-task-counts query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import clients, task_assignments


async def get_client(conn: AsyncConnection, client_id: str) -> dict[str, Any] | None:
    """One client row, or None."""
    row = (await conn.execute(select(clients).where(clients.c.id == client_id))).first()
    return row_dict(row) if row else None


async def list_clients(conn: AsyncConnection, *, status: str | None = None, limit: int | None = None,
                       offset: int = 0) -> list[dict[str, Any]]:
    """Every client (optionally of one status, or a page of `limit`), most recently seen first."""
    query = select(clients).order_by(clients.c.last_seen.desc(), clients.c.id)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    if status:
        query = query.where(clients.c.status == status)
    return [row_dict(row) for row in await conn.execute(query)]


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    """How many clients are active and inactive."""
    rows = await conn.execute(select(clients.c.status, func.count()).group_by(clients.c.status))
    return {status: int(count) for status, count in rows}


async def active_clients_with_task_counts(conn: AsyncConnection,
                                          client_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """The seed's "active clients with task counts": active_tasks and last_task_update per active client
    (or only for these ids)."""
    open_assignments = (
        select(
            task_assignments.c.client_id,
            func.count(func.distinct(task_assignments.c.task_id)).label("active_tasks"),
            func.max(task_assignments.c.updated_at).label("last_task_update"),
        )
        .where(task_assignments.c.status.in_(("assigned", "training")))
        .group_by(task_assignments.c.client_id)
    )
    if client_ids is not None:
        open_assignments = open_assignments.where(task_assignments.c.client_id.in_(client_ids))
    open_rows = open_assignments.subquery()
    query = (
        select(
            clients,
            func.coalesce(open_rows.c.active_tasks, 0).label("active_tasks"),
            open_rows.c.last_task_update,
        )
        .select_from(clients.outerjoin(open_rows, open_rows.c.client_id == clients.c.id))
        .where(clients.c.status == "active")
        .order_by(clients.c.id)
    )
    if client_ids is not None:
        query = query.where(clients.c.id.in_(client_ids))
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


async def contributions(conn: AsyncConnection, client_ids: list[str] | None = None,
                        limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Per client (or for these ids; or the top `limit` by compute): compute hours (assignment start to last
    update, for ranks that trained), samples trained (steps x batch size of completed ranks) and ranks completed."""
    from app.db.schema import tasks

    trained = task_assignments.c.status.in_(("training", "completed"))
    completed = task_assignments.c.status == "completed"
    seconds = dialect.seconds_between(conn, task_assignments.c.assigned_at, task_assignments.c.updated_at)
    steps = func.coalesce(dialect.json_number(conn, task_assignments.c.metrics, "$.step"), 0)
    batch = func.coalesce(dialect.json_number(conn, tasks.c.config, "$.batch_size"), 0)
    compute = func.sum(case((trained, seconds), else_=0))
    query = (
        select(task_assignments.c.client_id, compute.label("seconds"),
               func.sum(case((completed, steps * batch), else_=0)).label("samples"),
               func.sum(case((completed, 1), else_=0)).label("tasks"))
        .select_from(task_assignments.join(tasks, tasks.c.id == task_assignments.c.task_id))
        .group_by(task_assignments.c.client_id)
    )
    if client_ids is not None:
        query = query.where(task_assignments.c.client_id.in_(client_ids))
    if limit is not None:
        query = query.order_by(compute.desc()).limit(limit)
    return {
        row.client_id: {"compute_hours": max(0.0, float(row.seconds or 0)) / 3600, "samples": int(row.samples or 0),
                        "tasks": int(row.tasks or 0)}
        for row in await conn.execute(query)
    }


async def hostnames(conn: AsyncConnection, client_ids: list[str]) -> dict[str, str | None]:
    """Host names of these clients (two columns, no JSON)."""
    if not client_ids:
        return {}
    rows = await conn.execute(select(clients.c.id, clients.c.hostname).where(clients.c.id.in_(client_ids)))
    return {row.id: row.hostname for row in rows}


async def is_active_member(conn: AsyncConnection, client_id: str, farm_name: str) -> bool:
    """Whether a client has an active row whose session says it belongs to this farm."""
    row = (await conn.execute(select(clients.c.status, clients.c.session_info).where(clients.c.id == client_id))).first()
    if row is None or row.status != "active":
        return False
    session = row.session_info if isinstance(row.session_info, dict) else {}
    return session.get("farm_name") == farm_name
