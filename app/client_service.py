"""Reads about one client shared by the dashboard page and the API (no SQL here: query functions only)."""

from __future__ import annotations

from typing import Any

from app.db.engine import Database
from app.db.queries import claims as claim_queries
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.errors import NotFound

NO_CONTRIBUTION = {"compute_hours": 0.0, "samples": 0, "tasks": 0}


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
