"""SQL about client_logs and task_logs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import client_logs, task_logs

MAX_MESSAGE = 60_000  # TEXT holds 65,535 bytes


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


async def add_client_logs(
    conn: AsyncConnection, client_id: str, entries: Sequence[tuple[str, str, datetime | None]]
) -> None:
    """Insert (log_type, message, created_at or None for now) rows for a client."""
    if not entries:
        return
    now = dialect.now(conn)
    for log_type, message, created_at in entries:
        await conn.execute(
            insert(client_logs).values(
                client_id=client_id, log_type=log_type, message=_clip(message), created_at=created_at or now
            )
        )


async def add_task_log(conn: AsyncConnection, task_id: int, client_id: str | None, log_type: str, message: str) -> None:
    """Insert one task_logs row, created now."""
    await conn.execute(
        insert(task_logs).values(
            task_id=task_id, client_id=client_id, log_type=log_type, message=_clip(message), created_at=dialect.now(conn)
        )
    )


async def recent_client_logs(conn: AsyncConnection, client_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest client_logs rows (of one client, or of all)."""
    query = select(client_logs).order_by(client_logs.c.created_at.desc(), client_logs.c.id.desc()).limit(limit)
    if client_id is not None:
        query = query.where(client_logs.c.client_id == client_id)
    return [row_dict(row) for row in await conn.execute(query)]


async def recent_task_logs(conn: AsyncConnection, task_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The newest task_logs rows of a task."""
    query = (
        select(task_logs)
        .where(task_logs.c.task_id == task_id)
        .order_by(task_logs.c.created_at.desc(), task_logs.c.id.desc())
        .limit(limit)
    )
    return [row_dict(row) for row in await conn.execute(query)]


async def task_logs_after(conn: AsyncConnection, task_id: int, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
    """A task's log lines with an id above `after_id`, oldest first (what a live view has not shown yet)."""
    query = (select(task_logs).where(task_logs.c.task_id == task_id, task_logs.c.id > after_id)
             .order_by(task_logs.c.id).limit(limit))
    return [row_dict(row) for row in await conn.execute(query)]
