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


async def client_performance(conn: AsyncConnection, *, window_seconds: float = 3600) -> list[dict[str, Any]]:
    """The seed's "client performance metrics": avg/min/max per client and metric type over the last hour."""
    query = (
        select(
            performance_metrics.c.client_id,
            performance_metrics.c.metric_type,
            func.avg(performance_metrics.c.value).label("avg_value"),
            func.min(performance_metrics.c.value).label("min_value"),
            func.max(performance_metrics.c.value).label("max_value"),
        )
        .where(performance_metrics.c.recorded_at > dialect.seconds_ago(conn, window_seconds))
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
