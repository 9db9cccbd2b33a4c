"""Reads about clients shared by the dashboard pages and the API (no SQL here: query functions only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.db.engine import Database
from app.db.queries import claims as claim_queries
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.errors import NotFound

NO_CONTRIBUTION = {"compute_hours": 0.0, "samples": 0, "tasks": 0}


@dataclass(frozen=True)
class ClientPage:
    """A page of clients rows, each with `active_tasks` and `contribution` added, and how many clients exist."""

    clients: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


async def client_page(db: Database, limit: int, offset: int = 0) -> ClientPage:
    """Clients most recently seen first, with their active task counts and contributions."""
    async with db.connect() as conn:
        rows = await client_queries.list_clients(conn, limit=limit, offset=offset)
        total = sum((await client_queries.count_by_status(conn)).values())
        ids = [row["id"] for row in rows]
        counts = {r["id"]: r["active_tasks"] for r in await client_queries.active_clients_with_task_counts(conn, ids)}
        contributions = await client_queries.contributions(conn, ids)
    for row in rows:
        row["active_tasks"] = counts.get(row["id"], 0)
        row["contribution"] = contributions.get(row["id"], dict(NO_CONTRIBUTION))
    return ClientPage(clients=rows, total=total, limit=limit, offset=offset)


async def client_detail(db: Database, client_id: str) -> dict[str, Any]:
    """A client's row, last-hour performance (the seed's summary and its series), log, ranks held and contribution."""
    async with db.connect() as conn:
        row = await client_queries.get_client(conn, client_id)
        if row is None:
            raise NotFound(f"client {client_id} does not exist")
        return {
            "client": row,
            "performance": await metric_queries.client_performance(conn, client_id=client_id),
            "series": await metric_queries.client_series(conn, client_id),
            "logs": await log_queries.recent_client_logs(conn, client_id, 100),
            "held": await claim_queries.assignments_of_client(conn, client_id),
            "contribution": (await client_queries.contributions(conn, [client_id])).get(client_id, NO_CONTRIBUTION),
        }
