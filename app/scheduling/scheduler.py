"""The scheduler loop of one agent: claim ranks, wait for the group, run it, and sweep failed attempts."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.db.queries import claims as claim_queries
from app.db.queries import logs as log_queries
from app.db.queries import tasks as task_queries
from app.errors import DatabaseUnavailable
from app.scheduling.decide import failure_reason

if TYPE_CHECKING:
    from app.agent import Agent
    from app.training.run import TaskRun

log = logging.getLogger(__name__)

DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)
CLAIM_INTERVAL = 1.0
JOIN_TIMEOUT = 120.0


@dataclass
class Joined:
    """A rank taken in a group that has not formed yet."""

    task_id: int
    since: float


class Scheduler:
    """Claims work when the volunteer allows it and runs at most one task at a time."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.joined: Joined | None = None
        self.current: "TaskRun | None" = None
        self._current_task: asyncio.Task[Any] | None = None
        self.skipped: dict[int, str] = {}
        self.join_timeout = JOIN_TIMEOUT
        self.last_outcome: dict[str, Any] | None = None

    @property
    def busy(self) -> bool:
        """True while a rank is held (joined or running)."""
        return self.joined is not None or self.current is not None

    def describe(self) -> dict[str, Any]:
        """The scheduler's state for the dashboard and tray."""
        return {
            "running": self.current.describe() if self.current else None,
            "joined": {"task_id": self.joined.task_id, "waiting_s": round(time.monotonic() - self.joined.since, 1)}
            if self.joined else None,
            "last_outcome": self.last_outcome,
        }

    async def void_previous_session(self) -> None:
        """Ranks this client held before a restart are void: release joins and end running attempts."""
        async with self.agent.db.begin() as conn:
            for held in await claim_queries.assignments_of_client(conn, self.agent.client_id):
                if held["task_status"] == "running" and held["generation"] is not None:
                    await claim_queries.end_attempt(conn, held["task_id"], held["generation"],
                                                    f"client {self.agent.client_id} restarted", failure=True,
                                                    max_attempts=self.agent.settings.max_attempts)
                else:
                    await claim_queries.release_join(conn, held["task_id"], self.agent.client_id)

    async def claim_loop(self) -> None:
        """Every second or so: form/run what is held, or claim the next task this machine may run."""
        while True:
            await asyncio.sleep(CLAIM_INTERVAL * random.uniform(0.7, 1.3))
            try:
                await self.step()
            except DB_ERRORS as exc:
                log.debug("scheduler step skipped: %s", exc)

    async def step(self) -> None:
        """One scheduling decision."""
        if self.current is not None:
            return
        if self.joined is not None:
            await self._check_joined()
            return
        if not self.agent.may_claim():
            return
        await self._claim()

    async def _claim(self) -> None:
        try:
            async with self.agent.db.begin() as conn:
                claim = await claim_queries.claim_next(conn, self.agent.client_id, self.agent.capacity(),
                                                       skip_task_ids=list(self.skipped))
        except IntegrityError:
            return  # another client took the same rank first; the unique key said no
        if claim is None:
            return
        if claim.formed:
            await self._start(claim.task_id, claim.rank, claim.generation or 0, claim.n_clients)
        else:
            self.joined = Joined(claim.task_id, time.monotonic())
            log.info("joined task %s as rank %s of %s; waiting for the group", claim.task_id, claim.rank, claim.n_clients)

    async def _check_joined(self) -> None:
        assert self.joined is not None
        async with self.agent.db.connect() as conn:
            held = [a for a in await claim_queries.assignments_of_client(conn, self.agent.client_id)
                    if a["task_id"] == self.joined.task_id]
        if not held:
            log.info("rank of task %s was released", self.joined.task_id)
            self.joined = None
            return
        assignment = held[0]
        if assignment["task_status"] == "running":
            task_id = self.joined.task_id
            self.joined = None
            async with self.agent.db.connect() as conn:
                task = await task_queries.get_task(conn, task_id)
            n_clients = int((task or {}).get("config", {}).get("n_clients", 1)) if task else 1
            await self._start(task_id, assignment["rank"], assignment["generation"], n_clients)
            return
        if time.monotonic() - self.joined.since > self.join_timeout or not self.agent.may_claim():
            async with self.agent.db.begin() as conn:
                released = await claim_queries.release_join(conn, self.joined.task_id, self.agent.client_id)
            if released:
                log.info("gave back the rank of task %s (group not formed in %.0f s)", self.joined.task_id, self.join_timeout)
            self.joined = None

    async def _start(self, task_id: int, rank: int, generation: int, n_clients: int) -> None:
        from app.training.run import TaskRun

        async with self.agent.db.connect() as conn:
            task = await task_queries.get_task(conn, task_id)
        assert task is not None
        config = task["config"] or {}
        if not self.agent.catalog.has(config.get("model", ""), config.get("dataset", "")):
            reason = f"recipe {config.get('model')}/{config.get('dataset')} is not installed on {self.agent.client_id}"
            self.skipped[task_id] = reason
            async with self.agent.db.begin() as conn:
                await claim_queries.end_attempt(conn, task_id, generation, reason, failure=False,
                                                max_attempts=self.agent.settings.max_attempts)
                await log_queries.add_task_log(conn, task_id, self.agent.client_id, "warning", f"skipped: {reason}")
            return
        run = TaskRun(self.agent, task, rank, generation, n_clients)
        self.current = run
        self._current_task = asyncio.create_task(self._run(run), name=f"task-{task_id}")

    async def _run(self, run: "TaskRun") -> None:
        try:
            outcome = await run.run()
            self.last_outcome = {"task_id": run.task_id, "outcome": outcome.kind, "reason": outcome.reason}
            self.agent.on_task_ended(run, outcome)
        except Exception:
            log.exception("task %s: the run failed unexpectedly", run.task_id)
        finally:
            self.current = None
            self._current_task = None

    async def release_current(self, reason: str) -> None:
        """Give the current work back: emergency checkpoint, attempt ended, task re-queued; waits for it."""
        if self.joined is not None:
            try:
                async with self.agent.db.begin() as conn:
                    await claim_queries.release_join(conn, self.joined.task_id, self.agent.client_id)
            except DB_ERRORS:
                pass
            self.joined = None
        run, task = self.current, self._current_task
        if run is not None and task is not None:
            await run.request_stop(reason)
            try:
                await asyncio.wait_for(asyncio.shield(task), 60)
            except asyncio.TimeoutError:
                task.cancel()

    async def failure_loop(self) -> None:
        """Every heartbeat: end attempts whose members failed, and free ranks of groups that will not form."""
        while True:
            await asyncio.sleep(self.agent.settings.heartbeat_interval)
            try:
                await self.sweep_failures()
            except DB_ERRORS as exc:
                log.debug("failure sweep skipped: %s", exc)

    async def sweep_failures(self) -> list[int]:
        """One pass; returns the tasks whose attempt this agent ended."""
        from datetime import timedelta

        settings = self.agent.settings
        ended: list[int] = []
        # Right after a database outage every member's last_seen is old; let them all heartbeat first
        # (this agent too: until its own heartbeat gets through, its last_seen is as old as theirs).
        if not getattr(self.agent, "database_ok", True) or \
                time.monotonic() - getattr(self.agent, "database_ok_since", 0.0) < settings.failure_timeout + settings.heartbeat_interval:
            return ended
        async with self.agent.db.connect() as conn:
            running = await claim_queries.members_of_running(conn)
            now = await claim_queries.db_now(conn)
        for task_id, entry in running.items():
            # Whole-second DATETIMEs: allow one more second than the timeout before calling a member dead.
            reason = failure_reason(entry["members"], now, timedelta(seconds=settings.failure_timeout + 1))
            if reason is None:
                continue
            async with self.agent.db.begin() as conn:
                status = await claim_queries.end_attempt(conn, task_id, entry["generation"], reason, failure=True,
                                                         max_attempts=settings.max_attempts)
                if status:
                    await log_queries.add_task_log(conn, task_id, self.agent.client_id, "warning",
                                                   f"attempt {entry['generation']} ended: {reason}; task {status}")
            if status:
                ended.append(task_id)
                log.warning("task %s: attempt %s ended: %s; task %s", task_id, entry["generation"], reason, status)
        async with self.agent.db.begin() as conn:
            await claim_queries.release_stale_joins(conn, self.join_timeout, settings.failure_timeout + 1)
        return ended
