"""SQL read for the view of an elastic group: the task log lines that record its membership changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.schema import task_logs

MEMBERSHIP_PREFIX = "membership: "
REGROUPED_PREFIX = "training again at step "
MAX_CHANGES = 100


@dataclass(frozen=True)
class MembershipLine:
    """One task log line about the group's membership."""

    id: int
    created_at: datetime
    client_id: str | None
    log_type: str
    message: str


async def membership_lines(conn: AsyncConnection, task_id: int, limit: int = MAX_CHANGES) -> list[MembershipLine]:
    """A task's membership log lines (joins, departures, training again), newest first."""
    message = task_logs.c.message
    query = (
        select(task_logs.c.id, task_logs.c.created_at, task_logs.c.client_id, task_logs.c.log_type, message)
        .where(task_logs.c.task_id == task_id,
               or_(message.like(MEMBERSHIP_PREFIX + "%"), message.like(REGROUPED_PREFIX + "%")))
        .order_by(task_logs.c.created_at.desc(), task_logs.c.id.desc())
        .limit(limit)
    )
    return [MembershipLine(row.id, row.created_at, row.client_id, row.log_type, row.message)
            for row in await conn.execute(query)]
