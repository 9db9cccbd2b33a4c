"""The dashboard's live feed: one read per tick for every viewer, each new log line and point delivered once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from app.db.engine import Database
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.db.queries import tasks as task_queries
from app.web.live import Event, LiveFeed, Subscription

VIEWERS = 5
TICK = 0.05


class StatementCounter:
    """Counts the statements the engine really sends that read a table."""

    def __init__(self, db: Database, table: str) -> None:
        self.table, self.count = table, 0
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)
        self._engine = db.engine.sync_engine

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {self.table}" in statement.replace("`", ""):
            self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


async def _task(db: Database) -> int:
    async with db.begin() as conn:
        return await task_queries.insert_task(conn, type="training", requirements={}, config={"name": "live"})


async def _log(db: Database, task_id: int, message: str) -> None:
    async with db.begin() as conn:
        await log_queries.add_task_log(conn, task_id, None, "info", message)


async def _next_task_event(subscription: Subscription, events: AsyncIterator[Event]) -> Event:
    async for item in events:
        if item.name == "task":
            return item
    raise AssertionError("the feed dropped the viewer")


async def test_many_viewers_cost_one_read_per_tick_and_see_each_line_once(db: Database) -> None:
    """Five viewers of one task: each new log line reaches each exactly once, and a tick reads the logs once."""
    task_id = await _task(db)
    for n in range(3):
        await _log(db, task_id, f"old {n}")
    feed = LiveFeed(db, lambda: {"agent": {}}, interval=TICK)
    seen: list[list[str]] = [[] for _ in range(VIEWERS)]
    counter = StatementCounter(db, "task_logs")
    try:
        with_subs = [feed.subscribe(task_id) for _ in range(VIEWERS)]
        subscriptions = [cm.__enter__() for cm in with_subs]
        for index in range(VIEWERS):
            first = await feed.catch_up(task_id)
            assert first is not None
            seen[index] += [row["message"] for row in first.data["logs"]]
        streams = [s.events() for s in subscriptions]
        for n in range(4):
            await _log(db, task_id, f"new {n}")
            async with db.begin() as conn:
                await metric_queries.record_curve(conn, task_id, n, {"loss": 1.0 / (n + 1)})
            for index, subscription in enumerate(subscriptions):
                while f"new {n}" not in seen[index]:
                    item = await asyncio.wait_for(_next_task_event(subscription, streams[index]), 10)
                    seen[index] += [row["message"] for row in item.data["logs"]]
        for cm in with_subs:
            cm.__exit__(None, None, None)
    finally:
        counter.close()
        await feed.close()
    expected = ["old 0", "old 1", "old 2", "new 0", "new 1", "new 2", "new 3"]
    assert all(lines == expected for lines in seen), seen


async def test_reads_per_tick_do_not_grow_with_viewers(db: Database) -> None:
    """Over the same ticks, one viewer and five viewers read task_logs the same number of times."""
    task_id = await _task(db)

    async def reads_with(viewers: int) -> float:
        feed = LiveFeed(db, lambda: {}, interval=TICK)
        counter = StatementCounter(db, "task_logs")
        ticks = 0
        try:
            managers = [feed.subscribe(task_id) for _ in range(viewers)]
            subscriptions = [cm.__enter__() for cm in managers]
            for _ in subscriptions:
                assert await feed.catch_up(task_id) is not None
            before = counter.count
            streams = [s.events() for s in subscriptions]
            for _ in range(5):
                for stream in streams:
                    await asyncio.wait_for(stream.__anext__(), 10)  # a state event per tick
                ticks += 1
            per_tick = (counter.count - before) / ticks
            for cm in managers:
                cm.__exit__(None, None, None)
        finally:
            counter.close()
            await feed.close()
        return per_tick

    one, five = await reads_with(1), await reads_with(5)
    assert one <= 1.5 and five <= 1.5, (one, five)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_viewer_that_does_not_read_is_dropped(db: Database) -> None:
    """A stream whose browser stops reading is ended, and the loop stops when nobody listens."""
    feed = LiveFeed(db, lambda: {}, interval=0.001)
    with feed.subscribe(None) as subscription:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if subscription not in feed._subscriptions:
                break
        assert subscription not in feed._subscriptions
        items = [item async for item in subscription.events()]
        assert items == []
    await asyncio.sleep(0.05)
    await feed.close()
