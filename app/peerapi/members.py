"""Who may call the peer API: clients with an active row of this farm in the database (answers cached briefly)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from app.db.engine import Database
from app.db.queries import clients as client_queries
from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
MAX_CACHED = 4096


class Membership(Protocol):
    """Answers whether a client id names an active member of this farm."""

    async def is_member(self, client_id: str) -> bool:
        """True for an active client of this farm."""
        ...


class FarmMembers:
    """Membership read from the `clients` table: an active row whose session names this farm."""

    def __init__(self, db: Database, farm_name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.farm_name = farm_name
        self._clock = clock
        self._answers: dict[str, tuple[float, bool]] = {}

    async def is_member(self, client_id: str) -> bool:
        """True for an active client of this farm; False also when the database cannot answer."""
        now = self._clock()
        cached = self._answers.get(client_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            async with self.db.connect() as conn:
                answer = await client_queries.is_active_member(conn, client_id, self.farm_name)
        except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
            log.warning("cannot check peer %s against the clients table: %s", client_id, exc)
            return False
        if len(self._answers) >= MAX_CACHED:
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < CACHE_SECONDS}
            if len(self._answers) >= MAX_CACHED:
                self._answers.clear()
        self._answers[client_id] = (now, answer)
        return answer
