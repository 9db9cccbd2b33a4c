"""The dashboard's live feed: one loop per agent reads what changed every 2 s, once, for every open stream.

Each event stream subscribes; the loop runs while anyone listens. A task's curve points and log lines are
read after the feed's own cursor (only what is new), so a hundred viewers cost the database what one does.
A viewer too slow to keep up is dropped (its browser reconnects and catches up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from app import elastic_view
from app.db.engine import Database
from app.db.queries import assignments as assignment_queries
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.db.queries import tasks as task_queries
from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

EventName = Literal["state", "task"]
INTERVAL_SECONDS = 2.0
QUEUE_EVENTS = 16
CATCH_UP_LOG_LINES = 200
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)
STOP_SECONDS = 2.0  # a read under way when the dashboard stops is given this long to end


@dataclass(frozen=True)
class Event:
    """One server-sent event: its name and JSON-ready payload."""

    name: EventName
    data: dict[str, Any]


@dataclass
class _Cursor:
    """Where the feed has read a watched task up to."""

    last_point: int = 0
    last_log: int = 0


@dataclass(eq=False)
class Subscription:
    """One open event stream: the task it watches and the events queued for it."""

    task_id: int | None
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_EVENTS))

    def offer(self, event: Event) -> bool:
        """Queue an event; False when the viewer has fallen too far behind."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    async def events(self) -> AsyncIterator[Event]:
        """Events until the feed drops this viewer."""
        while (event := await self.queue.get()) is not None:
            yield event


async def _elastic(conn: AsyncConnection, row: dict[str, Any] | None, assignments: list[dict[str, Any]]) -> dict[str, Any]:
    """The `elastic` part of a task event: present for an elastic task only."""
    view = await elastic_view.read(conn, row, assignments) if row is not None else None
    return {"elastic": view.as_json()} if view is not None else {}


class LiveFeed:
    """Reads the farm's state and each watched task's changes once per tick and fans them out."""

    def __init__(self, db: Database, describe: Callable[[], dict[str, Any]], interval: float = INTERVAL_SECONDS) -> None:
        self._db = db
        self._describe = describe
        self._interval = interval
        self._subscriptions: set[Subscription] = set()
        self._cursors: dict[int, _Cursor] = {}
        self._loop: asyncio.Task[None] | None = None

    @contextmanager
    def subscribe(self, task_id: int | None) -> Iterator[Subscription]:
        """Listen for as long as the block runs; the first listener starts the loop."""
        subscription = Subscription(task_id)
        self._subscriptions.add(subscription)
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run(), name="dashboard-live-feed")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    async def catch_up(self, task_id: int) -> Event | None:
        """Everything a new viewer of a task needs once: row, ranks, the whole curve and recent log lines."""
        try:
            async with self._db.connect() as conn:
                row = await task_queries.get_task(conn, task_id)
                points = await metric_queries.curve(conn, task_id, 0)
                logs = await log_queries.recent_task_logs(conn, task_id, CATCH_UP_LOG_LINES)
                assignments = await assignment_queries.list_for_task(conn, task_id)
                elastic = await _elastic(conn, row, assignments)
        except DB_ERRORS:
            return None
        if task_id not in self._cursors:  # another viewer's cursor is left alone: it has not read past it yet
            self._cursors[task_id] = _Cursor(points[-1]["id"] if points else 0, max((r["id"] for r in logs), default=0))
        return Event("task", {"task": row, "points": points, "logs": list(reversed(logs)), "assignments": assignments,
                              **elastic})

    async def close(self) -> None:
        """Stop the loop and end every stream."""
        for subscription in list(self._subscriptions):
            self._drop(subscription)
        if self._loop is not None:
            await self._db.cancel_between_blocks([self._loop], STOP_SECONDS)

    async def _run(self) -> None:
        while self._subscriptions:
            state, tasks = await self._read()
            for subscription in list(self._subscriptions):
                fresh = [Event("state", state)]
                if subscription.task_id in tasks:
                    fresh.append(Event("task", tasks[subscription.task_id]))
                if not all(subscription.offer(event) for event in fresh):
                    self._drop(subscription)
            await asyncio.sleep(self._interval)
        self._cursors.clear()

    def _drop(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        while not subscription.queue.empty():
            subscription.queue.get_nowait()
        subscription.queue.put_nowait(None)

    async def _read(self) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        """One tick: the state for everyone and, per watched task, what changed since the last tick."""
        state: dict[str, Any] = dict(self._describe())
        changes: dict[int, dict[str, Any]] = {}
        watched = {s.task_id for s in self._subscriptions if s.task_id in self._cursors}
        try:
            async with self._db.connect() as conn:
                state["tasks_by_status"] = await task_queries.count_by_status(conn)
                state["clients_by_status"] = await client_queries.count_by_status(conn)
                for task_id in watched:
                    cursor = self._cursors[task_id]
                    points = await metric_queries.curve(conn, task_id, cursor.last_point)
                    logs = await log_queries.task_logs_after(conn, task_id, cursor.last_log)
                    if points:
                        cursor.last_point = points[-1]["id"]
                    if logs:
                        cursor.last_log = logs[-1]["id"]
                    row = await task_queries.get_task(conn, task_id)
                    assignments = await assignment_queries.list_for_task(conn, task_id)
                    changes[task_id] = {"task": row, "points": points, "logs": logs, "assignments": assignments,
                                        **await _elastic(conn, row, assignments)}
        except DB_ERRORS as exc:
            state["database_error"] = str(exc)
            return state, {}
        listening = {s.task_id for s in self._subscriptions}
        for task_id in set(self._cursors) - listening:
            del self._cursors[task_id]
        return state, changes
