"""SQL of the seed's maintenance section: old tasks, inactive clients, orphaned assignments; log and metric retention."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.schema import (
    checkpoints,
    client_logs,
    clients,
    performance_metrics,
    task_assignments,
    task_logs,
    task_metrics,
    task_runs,
    tasks,
)


async def delete_old_tasks(conn: AsyncConnection, *, older_than_days: int = 30, dry_run: bool = False) -> int:
    """Delete completed/failed tasks last updated before the cut-off (cascades); returns how many."""
    where = (tasks.c.status.in_(("completed", "failed")), tasks.c.updated_at < dialect.seconds_ago(conn, older_than_days * 86400))
    if dry_run:
        return int((await conn.execute(select(func.count()).select_from(tasks).where(*where))).scalar_one())
    return (await conn.execute(delete(tasks).where(*where))).rowcount


async def mark_inactive_clients(conn: AsyncConnection, *, older_than_seconds: float = 300, dry_run: bool = False) -> int:
    """Mark active clients unseen since the cut-off inactive; returns how many changed."""
    where = (clients.c.status == "active", clients.c.last_seen < dialect.seconds_ago(conn, older_than_seconds))
    if dry_run:
        return int((await conn.execute(select(func.count()).select_from(clients).where(*where))).scalar_one())
    return (await conn.execute(update(clients).where(*where).values(status="inactive"))).rowcount


async def delete_orphaned_assignments(conn: AsyncConnection, *, older_than_seconds: float = 3600, dry_run: bool = False) -> int:
    """Delete 'assigned' assignments not updated since the cut-off; returns how many."""
    where = (task_assignments.c.status == "assigned", task_assignments.c.updated_at < dialect.seconds_ago(conn, older_than_seconds))
    if dry_run:
        return int((await conn.execute(select(func.count()).select_from(task_assignments).where(*where))).scalar_one())
    return (await conn.execute(delete(task_assignments).where(*where))).rowcount


# --- the Operations sweeps: cascaded counts of old tasks, log and metric retention ---------------------------


def _old_task_ids(conn: AsyncConnection, older_than_days: int) -> Any:
    """The ids delete_old_tasks removes, as a subquery."""
    return select(tasks.c.id).where(
        tasks.c.status.in_(("completed", "failed")),
        tasks.c.updated_at < dialect.seconds_ago(conn, older_than_days * 86400),
    )


async def old_task_dependents(conn: AsyncConnection, *, older_than_days: int = 30) -> dict[str, int]:
    """Rows per table that delete_old_tasks would remove by cascade along with the tasks."""
    ids = _old_task_ids(conn, older_than_days)
    out: dict[str, int] = {}
    for table in (task_assignments, checkpoints, task_logs, performance_metrics, task_metrics, task_runs):
        count = (await conn.execute(select(func.count()).select_from(table).where(table.c.task_id.in_(ids)))).scalar_one()
        out[table.name] = int(count)
    return out


async def _delete_older(conn: AsyncConnection, table: Table, column: str, seconds: float, dry_run: bool) -> int:
    where = table.c[column] < dialect.seconds_ago(conn, seconds)
    if dry_run:
        return int((await conn.execute(select(func.count()).select_from(table).where(where))).scalar_one())
    return (await conn.execute(delete(table).where(where))).rowcount


async def delete_old_logs(conn: AsyncConnection, *, older_than_days: int = 30, dry_run: bool = False) -> dict[str, int]:
    """Delete task_logs and client_logs rows created before the cut-off; returns how many per table."""
    seconds = older_than_days * 86400
    return {
        "task_logs": await _delete_older(conn, task_logs, "created_at", seconds, dry_run),
        "client_logs": await _delete_older(conn, client_logs, "created_at", seconds, dry_run),
    }


async def delete_old_metrics(conn: AsyncConnection, *, older_than_days: int = 7, dry_run: bool = False) -> dict[str, int]:
    """Delete performance_metrics and task_metrics rows recorded before the cut-off; returns how many per table."""
    seconds = older_than_days * 86400
    return {
        "performance_metrics": await _delete_older(conn, performance_metrics, "recorded_at", seconds, dry_run),
        "task_metrics": await _delete_older(conn, task_metrics, "recorded_at", seconds, dry_run),
    }
