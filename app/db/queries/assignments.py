"""SQL about task_assignments: the seed's distributed-progress and available-ranks queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import task_assignments, tasks

MAX_RANKS = 1000  # MySQL's default cte_max_recursion_depth; task validation caps n_clients below it


async def list_for_task(conn: AsyncConnection, task_id: int) -> list[dict[str, Any]]:
    """The task's assignments ordered by rank."""
    query = select(task_assignments).where(task_assignments.c.task_id == task_id).order_by(task_assignments.c.rank)
    return [row_dict(row) for row in await conn.execute(query)]


async def distributed_progress(conn: AsyncConnection, task_id: int | None = None) -> list[dict[str, Any]]:
    """The seed's "distributed task progress": per distributed task, clients joined, completed shards, n_clients."""
    per_task = (
        select(
            task_assignments.c.task_id,
            func.count(func.distinct(task_assignments.c.client_id)).label("active_clients"),
            func.sum(case((task_assignments.c.status == "completed", 1), else_=0)).label("completed_shards"),
        )
        .group_by(task_assignments.c.task_id)
        .subquery()
    )
    query = (
        select(
            tasks.c.id,
            tasks.c.status,
            func.coalesce(per_task.c.active_clients, 0).label("active_clients"),
            per_task.c.completed_shards,
            dialect.json_number(conn, tasks.c.config, "$.n_clients").label("required_clients"),
        )
        .select_from(tasks.outerjoin(per_task, per_task.c.task_id == tasks.c.id))
        .where(dialect.json_is_true(conn, tasks.c.config, "$.distributed"))
        .order_by(tasks.c.id)
    )
    if task_id is not None:
        query = query.where(tasks.c.id == task_id)
    out = []
    for row in await conn.execute(query):
        item = row_dict(row)
        item["active_clients"] = int(item["active_clients"])
        # SUM over no joined rows is NULL, as in the seed's query; zero is what it means.
        item["completed_shards"] = int(item["completed_shards"] or 0)
        item["required_clients"] = int(item["required_clients"]) if item["required_clients"] is not None else None
        out.append(item)
    return out


async def available_ranks(conn: AsyncConnection, task_id: int) -> list[int]:
    """The seed's "available ranks for task", for any n_clients: ranks below n_clients with no assignment."""
    n_clients = (
        await conn.execute(select(dialect.json_number(conn, tasks.c.config, "$.n_clients")).where(tasks.c.id == task_id))
    ).scalar_one_or_none()
    if n_clients is None:
        return []
    bound = min(int(n_clients), MAX_RANKS)
    ranks = select(literal(0).label("r")).cte("ranks", recursive=True)
    ranks = ranks.union_all(select((ranks.c.r + 1).label("r")).where(ranks.c.r + 1 < bound))
    query = (
        select(ranks.c.r)
        .select_from(
            ranks.outerjoin(
                task_assignments,
                and_(task_assignments.c.task_id == task_id, task_assignments.c.rank == ranks.c.r),
            )
        )
        .where(task_assignments.c.id.is_(None), ranks.c.r < bound)
        .order_by(ranks.c.r)
    )
    return [int(r) for r in (await conn.execute(query)).scalars()]
