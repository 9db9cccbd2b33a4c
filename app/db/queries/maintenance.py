"""SQL of the seed's maintenance section: old tasks, inactive clients, orphaned assignments."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.schema import clients, task_assignments, tasks


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
