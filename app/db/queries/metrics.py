"""SQL about performance_metrics: recording and the seed's last-hour client performance query."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import performance_metrics


async def record_metrics(
    conn: AsyncConnection, client_id: str, values: Iterable[tuple[str, float]], task_id: int | None = None
) -> int:
    """Insert one row per (metric_type, value), recorded now; returns the number of rows."""
    rows = [
        {"client_id": client_id, "task_id": task_id, "metric_type": name, "value": float(value)}
        for name, value in values
    ]
    if rows:
        await conn.execute(insert(performance_metrics).values(recorded_at=dialect.now(conn)), rows)
    return len(rows)


async def client_performance(conn: AsyncConnection, *, window_seconds: float = 3600,
                             client_id: str | None = None) -> list[dict[str, Any]]:
    """The seed's "client performance metrics": avg/min/max per client and metric type over the last hour
    (for one client, it reads only that client's rows through idx_client_time)."""
    query = (
        select(
            performance_metrics.c.client_id,
            performance_metrics.c.metric_type,
            func.avg(performance_metrics.c.value).label("avg_value"),
            func.min(performance_metrics.c.value).label("min_value"),
            func.max(performance_metrics.c.value).label("max_value"),
        )
        .where(performance_metrics.c.recorded_at > dialect.seconds_ago(conn, window_seconds),
               *([performance_metrics.c.client_id == client_id] if client_id is not None else []))
        .group_by(performance_metrics.c.client_id, performance_metrics.c.metric_type)
        .order_by(performance_metrics.c.client_id, performance_metrics.c.metric_type)
    )
    out = []
    for row in await conn.execute(query):
        item = row_dict(row)
        for key in ("avg_value", "min_value", "max_value"):
            item[key] = float(item[key])
        out.append(item)
    return out


async def record_curve(conn: AsyncConnection, task_id: int, step: int, values: dict[str, float]) -> None:
    """One point per metric of a task's training curves at a step."""
    from app.db.schema import task_metrics

    rows = [{"task_id": task_id, "step": step, "name": name, "value": float(value)}
            for name, value in values.items() if isinstance(value, (int, float)) and value == value]
    if rows:
        await conn.execute(insert(task_metrics).values(recorded_at=dialect.now(conn)), rows)


async def curve(conn: AsyncConnection, task_id: int, after_id: int = 0, limit: int = 5000) -> list[dict[str, Any]]:
    """A task's curve points after a row id, oldest first: id, step, name, value."""
    from app.db.schema import task_metrics

    query = (select(task_metrics.c.id, task_metrics.c.step, task_metrics.c.name, task_metrics.c.value)
             .where(task_metrics.c.task_id == task_id, task_metrics.c.id > after_id)
             .order_by(task_metrics.c.id).limit(limit))
    return [row_dict(row) for row in await conn.execute(query)]


async def client_series(conn: AsyncConnection, client_id: str, *, window_seconds: float = 3600) -> list[dict[str, Any]]:
    """The rows behind the seed's last-hour client performance query, oldest first, for charts."""
    query = (select(performance_metrics.c.metric_type, performance_metrics.c.value, performance_metrics.c.recorded_at)
             .where(performance_metrics.c.client_id == client_id,
                    performance_metrics.c.recorded_at > dialect.seconds_ago(conn, window_seconds))
             .order_by(performance_metrics.c.recorded_at, performance_metrics.c.id))
    return [row_dict(row) for row in await conn.execute(query)]
