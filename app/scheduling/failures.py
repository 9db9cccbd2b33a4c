"""The failure sweep every agent runs: end attempts whose members stopped heartbeating (an elastic group that keeps
min_clients only loses those members), free ranks of groups that will not form. The generation fence makes each
ending happen once, however many agents sweep."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db.engine import Database
from app.db.queries import claims as claim_queries
from app.db.queries import logs as log_queries
from app.errors import DatabaseUnavailable
from app.scheduling import claiming
from app.scheduling.decide import Departure, dead_members

log = logging.getLogger("app.scheduling.scheduler")

DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)
JOIN_TIMEOUT = 120.0


class FailureSweep:
    """Ends failed attempts of any task of the farm; `healthy_since` is when this agent's database came back (or None
    while it is away)."""

    def __init__(self, db: Database, settings: Callable[[], Settings], client_id: str, *,
                 healthy_since: Callable[[], float | None] = lambda: 0.0, join_timeout: float = JOIN_TIMEOUT) -> None:
        self.db = db
        self.settings = settings
        self.client_id = client_id
        self.healthy_since = healthy_since
        self.join_timeout = join_timeout

    async def loop(self) -> None:
        """Sweep every heartbeat interval."""
        while True:
            await asyncio.sleep(self.settings().heartbeat_interval)
            try:
                await self.sweep()
            except DB_ERRORS as exc:
                log.debug("failure sweep skipped: %s", exc)

    async def sweep(self) -> list[int]:
        """One pass; returns the tasks whose attempt this agent ended."""
        settings = self.settings()
        ended: list[int] = []
        # Right after a database outage every member's last_seen is old; let them all heartbeat first
        # (this agent too: until its own heartbeat gets through, its last_seen is as old as theirs).
        since = self.healthy_since()
        if since is None or time.monotonic() - since < settings.failure_timeout + settings.heartbeat_interval:
            return ended
        async with self.db.connect() as conn:
            running = await claim_queries.members_of_running(conn)
            now = await claim_queries.db_now(conn)
        for task_id, entry in running.items():
            # Whole-second DATETIMEs: allow one more second than the timeout before calling a member dead.
            dead = dead_members(entry["members"], now, timedelta(seconds=settings.failure_timeout + 1))
            if dead and await self._end(task_id, entry["generation"], dead, settings.max_attempts):
                ended.append(task_id)
        async with self.db.begin() as conn:
            await claim_queries.release_stale_joins(conn, self.join_timeout, settings.failure_timeout + 1)
        return ended

    async def watch(self, task_id: int, generation: int) -> None:
        """A member's exchange broke: check that task's members every quarter second until its generation moves on
        (or a few seconds past failure_timeout), so the survivors need not wait for the next sweep."""
        settings = self.settings()
        deadline = time.monotonic() + settings.failure_timeout + 5
        while time.monotonic() < deadline:
            try:
                async with self.db.connect() as conn:
                    entry = (await claim_queries.members_of_running(conn, task_id)).get(task_id)
                    now = await claim_queries.db_now(conn)
            except DB_ERRORS as exc:
                log.debug("task %s: member check skipped: %s", task_id, exc)
                entry = None
            else:
                if entry is None or entry["generation"] != generation:
                    return
                dead = dead_members(entry["members"], now, timedelta(seconds=settings.failure_timeout + 1))
                if dead and await self._end(task_id, generation, dead, settings.max_attempts):
                    return
            await asyncio.sleep(0.25)

    async def _end(self, task_id: int, generation: int, dead: list[Departure], max_attempts: int) -> bool:
        """The dead members leave: an elastic group shrinks, any other attempt ends (counted as a failure)."""
        reason = "; ".join(d.reason for d in dead)
        async with self.db.begin() as conn:
            left = await claiming.leave(conn, task_id, generation, [d.client_id for d in dead], reason, failure=True,
                                        max_attempts=max_attempts, by=self.client_id)
            if left.kind == "ended":
                await log_queries.add_task_log(conn, task_id, self.client_id, "warning",
                                               f"attempt {generation} ended: {reason}; task {left.status}")
        if left.kind == "ended":
            log.warning("task %s: attempt %s ended: %s; task %s", task_id, generation, reason, left.status)
        elif left.formation is not None:
            log.warning("task %s: %s left (%s); generation %s", task_id, ", ".join(d.client_id for d in dead), reason,
                        left.formation.generation)
        return left.kind != "stale"
