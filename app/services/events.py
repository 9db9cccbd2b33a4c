"""This machine's lifecycle events: logged at once, written to client_logs in batches with the next database write."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from app.db.engine import Database
from app.db.queries import logs as log_queries

log = logging.getLogger("app.agent")

MAX_BUFFERED_LOGS = 10_000


class EventLog:
    """A bounded buffer of (level, message, time) lines waiting for the database."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._pending: list[tuple[str, str, datetime]] = []

    def __call__(self, log_type: str, message: str) -> None:
        """Log a lifecycle event to the Python log now and to client_logs at the next flush."""
        getattr(log, "warning" if log_type == "warning" else log_type)("%s", message)
        if len(self._pending) < MAX_BUFFERED_LOGS:
            self._pending.append((log_type, message, datetime.now(timezone.utc).replace(tzinfo=None)))

    @property
    def backlog(self) -> int:
        """Lines not yet written."""
        return len(self._pending)

    async def flush(self, db: Database) -> None:
        """Write the buffered lines; they stay buffered if the database is away."""
        if not self._pending:
            return
        entries = list(self._pending)
        async with db.begin() as conn:
            await log_queries.add_client_logs(conn, self.client_id, entries)
        del self._pending[: len(entries)]
