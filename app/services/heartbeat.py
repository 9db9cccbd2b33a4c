"""Registration and the heartbeat: this machine's clients row, kept fresh, and re-registered after an outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app import __version__, inventory
from app.db.autocommit import AutocommitConnection
from app.db.engine import Database
from app.db.queries import clients as client_queries
from app.errors import DatabaseUnavailable
from app.services.donation import Donation
from app.services.events import EventLog

MAX_BACKOFF_SECONDS = 30.0
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)


class Heartbeat:
    """Upserts the clients row at start, touches last_seen every interval, and tracks whether the database answers."""

    def __init__(self, db: Database, client_id: str, hostname: str, donation: Donation, events: EventLog, *,
                 session_info: Callable[[], dict[str, Any]], reach: Callable[[], dict[str, Any]]) -> None:
        self.db = db
        self.client_id = client_id
        self.hostname = hostname
        self.donation = donation
        self.events = events
        self.session_info = session_info
        self.reach = reach
        self.database_ok = True
        self.database_ok_since = time.monotonic()
        self._published_reach: dict[str, Any] = {}
        self.pinned = AutocommitConnection(db)

    async def register(self) -> None:
        """Upsert this machine's clients row: inventory, session, active, seen now."""
        cpu, ram, gpus = await asyncio.to_thread(lambda: (inventory.cpu_info(), inventory.ram_info(), inventory.gpu_info()))
        self.donation.inventory = {"cpu": cpu, "ram": ram, "gpus": gpus}
        async with self.db.begin() as conn:
            await client_queries.upsert_client(conn, client_id=self.client_id, cpu_info=cpu, ram_info=ram, gpu_info=gpus,
                                               session_info=self.session_info(), version=__version__,
                                               hostname=self.hostname)
        self._published_reach = dict(self.reach())

    async def beat(self) -> None:
        """One heartbeat: touch the row (re-register when it is gone), publish a changed reach, flush events."""
        if not self.database_ok:
            await self.register()
        elif not await self._touch():
            await self.register()
        elif self.reach() != self._published_reach:
            async with self.db.begin() as conn:
                await client_queries.update_session_info(conn, self.client_id, self.session_info())
            self._published_reach = dict(self.reach())
        if not self.database_ok:
            self.database_ok = True
            self.database_ok_since = time.monotonic()
            self.events("warning", f"database reachable again; client {self.client_id} re-registered")
        await self.events.flush(self.db)

    async def _touch(self) -> bool:
        """last_seen = now: one autocommitted statement on MySQL/MariaDB; a short transaction on SQLite."""
        if self.db.dialect == "mysql":
            return await self.pinned.run(lambda conn: client_queries.touch_client(conn, self.client_id))
        async with self.db.begin() as conn:
            return await client_queries.touch_client(conn, self.client_id)

    async def close(self) -> None:
        """Give back the heartbeat's own connection."""
        await self.pinned.close()

    async def loop(self) -> None:
        """Beat every heartbeat_interval; back off while the database is away."""
        interval = self.donation.settings.heartbeat_interval
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.beat()
                delay = interval
            except DB_ERRORS as exc:
                if self.database_ok:
                    self.events("error", f"database unreachable, retrying with backoff: {exc}")
                self.database_ok = False
                delay = min(max(delay * 2, interval), MAX_BACKOFF_SECONDS)
