"""Database.quiesce and cancel_between_blocks on SQLite and MariaDB: tasks are cancelled between transactions,
never inside one."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from app.db.engine import Database
from app.db.queries import clients as client_queries
from tests.db.test_queries import add_client


async def _write_and_hold(db: Database, client_id: str, inside: asyncio.Event, go: asyncio.Event) -> None:
    """A transaction that writes a client row, says it is inside, and commits only once `go` is set."""
    async with db.begin() as conn:
        await add_client(conn, client_id)
        inside.set()
        await go.wait()


async def test_a_block_under_way_ends_and_new_ones_of_other_tasks_wait(db: Database) -> None:
    """The transaction open when quiesce starts commits; another task's new block never starts; the caller's does."""
    inside, go = asyncio.Event(), asyncio.Event()

    async def under_way() -> None:
        await _write_and_hold(db, "under-way", inside, go)

    async def latecomer() -> None:
        async with db.begin() as conn:
            await add_client(conn, "latecomer")

    first = asyncio.create_task(under_way())
    await inside.wait()
    started: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, lambda: started.append(asyncio.create_task(latecomer())))
    loop.call_later(0.3, go.set)
    assert await db.quiesce(10) == 0
    assert go.is_set()  # it waited for the block under way
    await first
    (late,) = started
    await asyncio.sleep(0.3)
    assert not late.done()
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    async with db.begin() as conn:
        await add_client(conn, "owner")
    async with db.connect() as conn:
        assert {c["id"] for c in await client_queries.list_clients(conn)} == {"under-way", "owner"}


async def test_quiesce_reports_blocks_that_outlast_it(db: Database) -> None:
    """A block that does not end within the timeout is counted, and the caller goes on."""
    inside, go = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        async with db.connect():
            inside.set()
            await go.wait()

    holder = asyncio.create_task(stuck())
    await inside.wait()
    assert await db.quiesce(0.2) == 1
    go.set()
    await holder


async def test_a_task_is_cancelled_once_its_block_ends_and_opens_no_other(db: Database) -> None:
    """cancel_between_blocks: the transaction under way commits, the task's next block never runs, others go on."""
    inside, go = asyncio.Event(), asyncio.Event()

    async def flusher() -> None:
        await _write_and_hold(db, "flushed", inside, go)
        async with db.begin() as conn:
            await add_client(conn, "never")

    task = asyncio.create_task(flusher())
    await inside.wait()
    asyncio.get_running_loop().call_later(0.3, go.set)
    await db.cancel_between_blocks([task], 10)
    assert go.is_set() and task.cancelled()
    async with db.connect() as conn:
        assert await client_queries.get_client(conn, "flushed") is not None
        assert await client_queries.get_client(conn, "never") is None


@pytest.mark.parametrize("how", ["quiesce", "between"])
async def test_writers_cancelled_at_random_leave_the_database_writable(db: Database, how: str) -> None:
    """Busy writers cancelled at a random moment: none is left stuck and the next write goes through, every time
    (cancelled mid-statement instead, SQLite soon answers "database is locked" or keeps a writer waiting)."""
    ids = itertools.count()
    rng = random.Random(7)

    async def writer() -> None:
        while True:
            async with db.begin() as conn:
                await add_client(conn, f"w{next(ids)}")
                await client_queries.get_client(conn, "w0")
            await asyncio.sleep(0)

    for trial in range(60):
        tasks = [asyncio.create_task(writer()) for _ in range(6)]
        await asyncio.sleep(rng.random() * 0.05)
        if how == "quiesce":
            assert await db.quiesce(10) == 0
            for task in tasks:
                task.cancel()
        else:
            await asyncio.wait_for(db.cancel_between_blocks(tasks, 10), 20)
        _done, stuck = await asyncio.wait(tasks, timeout=10)
        assert not stuck, f"trial {trial}: {len(stuck)} writer(s) still inside the database"
        async with db.begin() as conn:
            await add_client(conn, f"after{trial}")
        db.resume()


async def test_resume_lets_a_waiting_block_go_on(db: Database) -> None:
    async def latecomer() -> None:
        async with db.begin() as conn:
            await add_client(conn, "latecomer")

    assert await db.quiesce(1) == 0
    late = asyncio.create_task(latecomer())
    await asyncio.sleep(0.2)
    assert not late.done()
    db.resume()
    await asyncio.wait_for(late, 10)
    async with db.connect() as conn:
        assert await client_queries.get_client(conn, "latecomer") is not None


async def test_the_tasks_are_cancelled_even_when_the_wait_for_them_is(db: Database) -> None:
    """The caller of cancel_between_blocks cancelled while it waits (its own run stopping): its tasks still end."""
    inside = asyncio.Event()

    async def holder() -> None:
        async with db.connect():
            inside.set()
            await asyncio.sleep(3600)

    held, idle = asyncio.create_task(holder()), asyncio.create_task(asyncio.sleep(3600))
    await inside.wait()
    stopper = asyncio.create_task(db.cancel_between_blocks([held, idle], 60))
    await asyncio.sleep(0.2)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    _done, left = await asyncio.wait([held, idle], timeout=10)
    assert not left and held.cancelled() and idle.cancelled()
