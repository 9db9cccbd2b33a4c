"""SQL about checkpoints: record (fenced by generation), resume candidates, pruning."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.queries.claims import check_fence
from app.db.schema import checkpoints, task_assignments, tasks

FULL_TYPES = ("regular", "distributed", "emergency", "final")


async def record(conn: AsyncConnection, *, task_id: int, generation: int, client_id: str, path: str, kind: str,
                 metrics: dict[str, Any], set_task_path: bool) -> int:
    """Insert a checkpoints row and point the assignment (and, if asked, the task) at it; Fenced if outdated (an
    emergency checkpoint of the attempt that just ended is still taken: it is the newest state there is)."""
    await check_fence(conn, task_id, generation, just_ended=kind == "emergency")
    result = await conn.execute(
        insert(checkpoints).values(task_id=task_id, client_id=client_id, path=path, type=kind, metrics=metrics,
                                   created_at=dialect.now(conn))
    )
    await conn.execute(
        update(task_assignments)
        .where(task_assignments.c.task_id == task_id, task_assignments.c.client_id == client_id)
        .values(checkpoint_path=path)
    )
    if set_task_path:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(checkpoint_path=path,
                                                                             updated_at=dialect.now(conn)))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def resume_candidates(conn: AsyncConnection, task_id: int, prefer_client: str | None = None) -> list[dict[str, Any]]:
    """Checkpoints a task can resume from (every rank's are whole), newest step first; at one step, this
    client's own files first (no transfer), then rank 0's, then the newest row."""
    rows = [row_dict(r) for r in await conn.execute(
        select(checkpoints).where(checkpoints.c.task_id == task_id, checkpoints.c.type.in_(FULL_TYPES))
    )]

    def key(row: dict[str, Any]) -> tuple[int, int, int, int]:
        metrics = row["metrics"] or {}
        return (int(metrics.get("step", -1)), int(row["client_id"] == prefer_client),
                int(metrics.get("rank", 1) == 0), row["id"])

    return sorted(rows, key=key, reverse=True)


async def rank_state(conn: AsyncConnection, task_id: int, rank: int, step: int) -> dict[str, Any] | None:
    """The per-rank ('distributed') checkpoint written by that rank at that step, if any."""
    for row in await conn.execute(
        select(checkpoints).where(checkpoints.c.task_id == task_id, checkpoints.c.type == "distributed")
        .order_by(checkpoints.c.id.desc())
    ):
        metrics = row.metrics or {}
        if metrics.get("rank") == rank and metrics.get("step") == step:
            return row_dict(row)
    return None


async def list_for_task(conn: AsyncConnection, task_id: int) -> list[dict[str, Any]]:
    """Every checkpoint of a task, newest first."""
    return [row_dict(r) for r in await conn.execute(
        select(checkpoints).where(checkpoints.c.task_id == task_id).order_by(checkpoints.c.id.desc())
    )]


async def prune_regular(conn: AsyncConnection, task_id: int, client_id: str, keep: int) -> list[str]:
    """Delete this client's regular and distributed checkpoint rows of a task beyond the newest `keep`; returns their paths."""
    removed: list[str] = []
    for kind in ("regular", "distributed"):
        rows = (await conn.execute(
            select(checkpoints.c.id, checkpoints.c.path)
            .where(checkpoints.c.task_id == task_id, checkpoints.c.client_id == client_id, checkpoints.c.type == kind)
            .order_by(checkpoints.c.id.desc())
        )).all()
        old = rows[keep:]
        if old:
            await conn.execute(delete(checkpoints).where(checkpoints.c.id.in_([r.id for r in old])))
            removed += [r.path for r in old]
    return removed


