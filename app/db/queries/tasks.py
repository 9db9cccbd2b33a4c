"""SQL about tasks: insert, list, look up, and the seed's active-tasks and completion-statistics queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import clients, tasks

TASK_SORTS = {
    "priority": (tasks.c.priority.desc(), tasks.c.created_at.asc(), tasks.c.id.asc()),
    "newest": (tasks.c.created_at.desc(), tasks.c.id.desc()),
    "oldest": (tasks.c.created_at.asc(), tasks.c.id.asc()),
}


async def insert_task(
    conn: AsyncConnection,
    *,
    type: str,
    requirements: dict[str, Any],
    config: dict[str, Any] | None,
    priority: int = 0,
    status: str = "pending",
) -> int:
    """Insert a task (created_at = updated_at = now) and return its id."""
    now = dialect.now(conn)
    result = await conn.execute(
        insert(tasks).values(
            type=type,
            requirements=requirements,
            config=config,
            priority=priority,
            status=status,
            created_at=now,
            updated_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def get_task(conn: AsyncConnection, task_id: int) -> dict[str, Any] | None:
    """One task row, or None."""
    row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
    return row_dict(row) if row else None


async def list_tasks(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    type: str | None = None,
    sort: str = "priority",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of tasks with optional status/type filters, and the total count matching the filters."""
    conditions = []
    if status:
        conditions.append(tasks.c.status == status)
    if type:
        conditions.append(tasks.c.type == type)
    where = and_(*conditions) if conditions else None
    query = select(tasks).order_by(*TASK_SORTS[sort]).limit(limit).offset(offset)
    count = select(func.count()).select_from(tasks)
    if where is not None:
        query = query.where(where)
        count = count.where(where)
    rows = (await conn.execute(query)).all()
    total = (await conn.execute(count)).scalar_one()
    return [row_dict(row) for row in rows], int(total)


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    """How many tasks are in each status."""
    rows = await conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))
    return {status: int(count) for status, count in rows}


async def active_tasks_with_clients(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The seed's "active tasks with client info": running tasks with their client's status and last_seen."""
    query = (
        select(tasks, clients.c.status.label("client_status"), clients.c.last_seen)
        .select_from(tasks.outerjoin(clients, tasks.c.client_id == clients.c.id))
        .where(tasks.c.status == "running")
        .order_by(tasks.c.priority.desc(), tasks.c.created_at.asc())
    )
    return [row_dict(row) for row in await conn.execute(query)]


async def completion_statistics(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The seed's "task completion statistics": per type total, completed, failed and average seconds to complete."""
    duration = dialect.seconds_between(conn, tasks.c.created_at, tasks.c.updated_at)
    query = (
        select(
            tasks.c.type,
            func.count().label("total"),
            func.sum(case((tasks.c.status == "completed", 1), else_=0)).label("completed"),
            func.sum(case((tasks.c.status == "failed", 1), else_=0)).label("failed"),
            func.avg(case((tasks.c.status == "completed", duration), else_=None)).label("avg_completion_time"),
        )
        .group_by(tasks.c.type)
        .order_by(tasks.c.type)
    )
    out = []
    for row in await conn.execute(query):
        item = row_dict(row)
        item["total"] = int(item["total"])
        item["completed"] = int(item["completed"] or 0)
        item["failed"] = int(item["failed"] or 0)
        avg = item["avg_completion_time"]
        item["avg_completion_time"] = float(avg) if avg is not None else None
        out.append(item)
    return out
