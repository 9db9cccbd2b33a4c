"""Fencing by generation: ending attempts, refusing the old coordinator's writes, re-election, the failure sweep."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.config import Settings, load_settings
from app.db.engine import Database, create_database
from app.db.queries import checkpoints as checkpoint_queries
from app.db.queries.claims import (
    check_fence,
    publish_rendezvous,
    set_assignment,
    update_task_fenced,
)
from app.db.schema import checkpoints, task_assignments, task_logs
from app.errors import Fenced
from app.scheduling.claiming import end_attempt, mark_error
from app.scheduling.decide import Capacity
from app.scheduling.failures import FailureSweep
from tests.scheduling.test_claims import (
    add_task,
    claim,
    complete,
    now_of,
    ranks_of,
    register,
    run_row,
    set_client_columns,
    task_row,
    upgraded,
)


async def form(db: Database, task_id: int, members: dict[str, Capacity]) -> int:
    """Claim the task with these clients in order; the last claim forms it. Returns the generation."""
    got = None
    for client_id, capacity in members.items():
        got = await claim(db, client_id, capacity)
        assert got is not None and got.task_id == task_id
    assert got is not None and got.formed and got.generation is not None
    return got.generation


async def end(db: Database, task_id: int, generation: int, reason: str = "rank 1 stopped", *, failure: bool = True,
              max_attempts: int = 3) -> str | None:
    """end_attempt in its own transaction."""
    async with db.begin() as conn:
        return await end_attempt(conn, task_id, generation, reason, failure=failure, max_attempts=max_attempts)


async def count_checkpoints(db: Database, task_id: int) -> int:
    """How many checkpoints rows the task has."""
    async with db.connect() as conn:
        return int((await conn.execute(
            select(func.count()).select_from(checkpoints).where(checkpoints.c.task_id == task_id))).scalar_one())


async def snapshot(db: Database, task_id: int) -> tuple[Any, ...]:
    """Everything a fenced write could change: task row, run row, assignments, checkpoint count."""
    async with db.connect() as conn:
        assignments = [tuple(r) for r in await conn.execute(
            select(task_assignments).where(task_assignments.c.task_id == task_id).order_by(task_assignments.c.id))]
    return await task_row(db, task_id), await run_row(db, task_id), assignments, await count_checkpoints(db, task_id)


async def record_checkpoint(db: Database, task_id: int, generation: int, client_id: str, path: str) -> int:
    """checkpoints.record in its own transaction."""
    async with db.begin() as conn:
        return await checkpoint_queries.record(conn, task_id=task_id, generation=generation, client_id=client_id,
                                               path=path, kind="regular", metrics={"step": 1}, set_task_path=True)


async def assert_fenced(db: Database, task_id: int, generation: int, coordinator: str, member: str) -> None:
    """Every fenced write of this generation is refused and changes nothing."""
    before = await snapshot(db, task_id)
    writes = [
        lambda conn: update_task_fenced(conn, task_id, generation, coordinator, {"status": "completed"}),
        lambda conn: update_task_fenced(conn, task_id, generation, coordinator, {"result": {"progress": 99.0}}),
        lambda conn: publish_rendezvous(conn, task_id, generation, coordinator, "10.9.9.9", 1),
        lambda conn: set_assignment(conn, task_id, member, generation, status="training"),
        lambda conn: set_assignment(conn, task_id, coordinator, generation, status="completed"),
        lambda conn: check_fence(conn, task_id, generation),
        lambda conn: check_fence(conn, task_id, generation, coordinator),
        lambda conn: checkpoint_queries.record(conn, task_id=task_id, generation=generation, client_id=coordinator,
                                               path="old/ck.pt", kind="final", metrics={"step": 9},
                                               set_task_path=True),
    ]
    for write in writes:
        with pytest.raises(Fenced):
            async with db.begin() as conn:
                await write(conn)
    assert await snapshot(db, task_id) == before


async def test_end_attempt_fences_the_old_coordinator(db: Database) -> None:
    """After end_attempt the old generation's writes are all refused, before and after a new formation."""
    members = {"a": await register(db, "a", gpu_mb=8000), "b": await register(db, "b", gpu_mb=4000)}
    task_id = await add_task(db, n_clients=2)
    g = await form(db, task_id, members)
    assert g == 1

    # The coordinator of the current generation can write; a member cannot write as coordinator.
    async with db.begin() as conn:
        await update_task_fenced(conn, task_id, g, "a", {"result": {"progress": 10.0}})
        await publish_rendezvous(conn, task_id, g, "a", "10.0.0.1", 29500)
        await set_assignment(conn, task_id, "b", g, status="training")
        await check_fence(conn, task_id, g, "a")
    await record_checkpoint(db, task_id, g, "a", "ck/1.pt")
    row = await task_row(db, task_id)
    assert row["result"] == {"progress": 10.0} and row["checkpoint_path"] == "ck/1.pt"
    assert (await run_row(db, task_id) or {})["rendezvous_port"] == 29500
    for write in (lambda conn: update_task_fenced(conn, task_id, g, "b", {"result": None}),
                  lambda conn: publish_rendezvous(conn, task_id, g, "b", "10.0.0.2", 1),
                  lambda conn: check_fence(conn, task_id, g, "b")):
        with pytest.raises(Fenced):
            async with db.begin() as conn:
                await write(conn)

    assert await end(db, task_id, g, "rank 1 (b) stopped heartbeating") == "pending"
    row, run = await task_row(db, task_id), await run_row(db, task_id)
    assert row["status"] == "pending" and row["client_id"] is None
    assert "attempt 1 ended: rank 1 (b) stopped heartbeating" in row["error_log"]
    assert run is not None and run["generation"] == g + 1 and run["failures"] == 1
    assert run["coordinator_id"] is None and run["rendezvous_host"] is None and run["rendezvous_port"] is None
    assert run["formed_at"] is None
    assert await ranks_of(db, task_id) == {}
    assert await count_checkpoints(db, task_id) == 1
    await assert_fenced(db, task_id, g, "a", "b")

    # The same clients form again: "a" is coordinator again, but only of the new generation.
    g2 = await form(db, task_id, members)
    assert g2 == g + 2 and (await run_row(db, task_id) or {})["coordinator_id"] == "a"
    await assert_fenced(db, task_id, g, "a", "b")
    await assert_fenced(db, task_id, g + 1, "a", "b")
    assert (await task_row(db, task_id))["result"] == {"progress": 10.0}
    async with db.begin() as conn:
        await update_task_fenced(conn, task_id, g2, "a", {"result": {"progress": 50.0}})
        await set_assignment(conn, task_id, "b", g2, status="training")
    await record_checkpoint(db, task_id, g2, "a", "ck/2.pt")
    assert (await task_row(db, task_id))["result"] == {"progress": 50.0}
    assert await count_checkpoints(db, task_id) == 2


async def test_only_one_ender_wins(db: Database) -> None:
    """A second end_attempt for the same generation returns None and changes nothing."""
    members = {"a": await register(db, "a"), "b": await register(db, "b")}
    task_id = await add_task(db, n_clients=2)
    g = await form(db, task_id, members)
    assert await end(db, task_id, g, "first") == "pending"
    before = await snapshot(db, task_id)
    assert await end(db, task_id, g, "second") is None
    assert await end(db, task_id, g, "third", failure=False) is None
    assert await snapshot(db, task_id) == before
    assert "second" not in before[0]["error_log"]
    assert (await run_row(db, task_id) or {})["failures"] == 1


async def test_end_attempt_after_completion_changes_nothing(db: Database) -> None:
    """A late ender (a sweep or a failing rank) cannot re-queue or fail a task its coordinator completed."""
    members = {"a": await register(db, "a"), "b": await register(db, "b")}
    task_id = await add_task(db, n_clients=2)
    g = await form(db, task_id, members)
    await complete(db, task_id, g, "a")
    before = await snapshot(db, task_id)
    assert await end(db, task_id, g, "rank 1 (b) failed after the end") is None
    async with db.begin() as conn:
        assert await mark_error(conn, task_id, g, "too late") is False
    assert await snapshot(db, task_id) == before
    assert before[0]["status"] == "completed" and before[0]["client_id"] == "a"


async def test_re_election_after_the_coordinator_left(db: Database) -> None:
    """The survivors form again: one new coordinator, a higher generation, and only it may write."""
    caps = {"a": await register(db, "a", gpu_mb=16000), "b": await register(db, "b", gpu_mb=8000),
            "c": await register(db, "c", gpu_mb=4000)}
    task_id = await add_task(db, n_clients=2)
    g = await form(db, task_id, {"a": caps["a"], "b": caps["b"]})
    assert (await run_row(db, task_id) or {})["coordinator_id"] == "a"
    async with db.begin() as conn:
        await set_client_columns(conn, "a", {"status": "inactive"})
    assert await end(db, task_id, g, "rank 0 (a) stopped (client inactive)") == "pending"

    g2 = await form(db, task_id, {"c": caps["c"], "b": caps["b"]})
    assert g2 > g
    ranks = await ranks_of(db, task_id)
    assert ranks == {"b": 0, "c": 1}
    assert [cid for cid, rank in ranks.items() if rank == 0] == ["b"]
    row, run = await task_row(db, task_id), await run_row(db, task_id)
    assert row["status"] == "running" and row["client_id"] == "b"
    assert run is not None and run["coordinator_id"] == "b" and run["generation"] == g2 and run["failures"] == 1
    await assert_fenced(db, task_id, g, "a", "b")
    for who in ("a", "c"):
        with pytest.raises(Fenced):
            await complete(db, task_id, g2, who)
    await complete(db, task_id, g2, "b")
    assert (await task_row(db, task_id))["status"] == "completed"


async def test_max_attempts_fails_the_task(db: Database) -> None:
    """The third failed attempt of three marks the task failed, with error_log saying how many."""
    members = {"a": await register(db, "a"), "b": await register(db, "b")}
    task_id = await add_task(db, n_clients=2)
    outcomes = []
    for attempt in range(3):
        g = await form(db, task_id, members)
        assert g == 2 * attempt + 1
        outcomes.append(await end(db, task_id, g, f"crash {attempt + 1}", max_attempts=3))
    assert outcomes == ["pending", "pending", "failed"]
    row, run = await task_row(db, task_id), await run_row(db, task_id)
    assert row["status"] == "failed" and row["client_id"] is None
    assert "attempt 5 ended: crash 3; 3 failed attempt(s), the limit is 3" in row["error_log"]
    assert "crash 1" in row["error_log"] and "crash 2" in row["error_log"]
    assert run is not None and run["failures"] == 3 and run["generation"] == 6
    assert await ranks_of(db, task_id) == {}
    assert await claim(db, "a", members["a"]) is None


# --- the scheduler's failure sweep --------------------------------------------------------------------


def sweep_settings(tmp_path: Path) -> Settings:
    """Real settings with a 5 s failure timeout, no config file and no environment."""
    settings = load_settings(
        env={}, cli={"failure_timeout": "5s", "heartbeat_interval": "1s", "max_attempts": 3, "data_dir": str(tmp_path)},
        config_file=tmp_path / "none.toml",
    )
    assert settings.failure_timeout == 5.0 and settings.max_attempts == 3
    return settings


async def warnings_of(db: Database, task_id: int) -> list[str]:
    """The task's warning log messages."""
    async with db.connect() as conn:
        return list((await conn.execute(select(task_logs.c.message).where(
            task_logs.c.task_id == task_id, task_logs.c.log_type == "warning"))).scalars())


async def test_sweep_ends_a_silent_group_and_leaves_a_healthy_one(db: Database, tmp_path: Path) -> None:
    """A member silent for 30 s (timeout 5 s) ends its attempt; the healthy group keeps running."""
    caps = {cid: await register(db, cid) for cid in ("a", "b", "c", "d", "sweeper")}
    sick = await add_task(db, n_clients=2, priority=1)
    healthy = await add_task(db, n_clients=2)
    g_sick = await form(db, sick, {"a": caps["a"], "b": caps["b"]})
    g_healthy = await form(db, healthy, {"c": caps["c"], "d": caps["d"]})
    settings = sweep_settings(tmp_path)
    scheduler = FailureSweep(db, lambda: settings, "sweeper")

    assert await scheduler.sweep() == []
    now = await now_of(db)
    async with db.begin() as conn:
        await set_client_columns(conn, "b", {"last_seen": now - timedelta(seconds=30)})
    assert await scheduler.sweep() == [sick]

    row, run = await task_row(db, sick), await run_row(db, sick)
    assert row["status"] == "pending" and "stopped heartbeating" in row["error_log"]
    assert run is not None and run["generation"] == g_sick + 1 and run["failures"] == 1
    assert await ranks_of(db, sick) == {}
    assert [m for m in await warnings_of(db, sick) if m.startswith(f"attempt {g_sick} ended")]
    assert (await task_row(db, healthy))["status"] == "running"
    assert (await run_row(db, healthy) or {})["generation"] == g_healthy
    assert set(await ranks_of(db, healthy)) == {"c", "d"}
    assert await scheduler.sweep() == []


async def test_concurrent_sweeps_end_an_attempt_once(database_url: str, tmp_path: Path) -> None:
    """Two agents sweeping at the same time (own Databases) end the silent group's attempt exactly once."""
    async with upgraded(database_url) as setup:
        await _concurrent_sweeps(setup, database_url, tmp_path)


async def _concurrent_sweeps(setup: Database, database_url: str, tmp_path: Path) -> None:
    """The body of test_concurrent_sweeps_end_an_attempt_once."""
    caps = {cid: await register(setup, cid) for cid in ("a", "b", "s1", "s2")}
    task_id = await add_task(setup, n_clients=2)
    g = await form(setup, task_id, {"a": caps["a"], "b": caps["b"]})
    now = await now_of(setup)
    async with setup.begin() as conn:
        await set_client_columns(conn, "a", {"last_seen": now - timedelta(seconds=30)})
    settings = sweep_settings(tmp_path)
    sweepers = [create_database(database_url, pool_size=1) for _ in range(2)]
    try:
        schedulers = [FailureSweep(d, lambda: settings, cid) for d, cid in zip(sweepers, ("s1", "s2"), strict=False)]
        results = await asyncio.gather(*(scheduler.sweep() for scheduler in schedulers))
    finally:
        for d in sweepers:
            await d.dispose()
    assert sorted(results, key=len) == [[], [task_id]]
    run = await run_row(setup, task_id)
    assert run is not None and run["generation"] == g + 1 and run["failures"] == 1
    assert (await task_row(setup, task_id))["error_log"].count("ended") == 1
    assert len([m for m in await warnings_of(setup, task_id) if m.startswith(f"attempt {g} ended")]) == 1


@pytest.mark.mysql
async def test_ten_concurrent_enders_on_mariadb(mysql_url: str) -> None:
    """10 end_attempt calls for one generation from 10 Databases, all inside open transactions: one wins."""
    async with upgraded(mysql_url) as setup:
        await _ten_enders(setup, mysql_url)


async def _ten_enders(setup: Database, mysql_url: str) -> None:
    """The body of test_ten_concurrent_enders_on_mariadb."""
    members = {"a": await register(setup, "a"), "b": await register(setup, "b")}
    task_id = await add_task(setup, n_clients=2)
    g = await form(setup, task_id, members)
    databases = [create_database(mysql_url, pool_size=1) for _ in range(10)]
    barrier = asyncio.Barrier(len(databases))

    async def ender(db: Database, index: int) -> str | None:
        """Open a transaction, wait until all are open, then try to end the attempt."""
        async with db.begin() as conn:
            await conn.execute(select(1))
            await barrier.wait()
            return await end_attempt(conn, task_id, g, f"ender {index}", failure=True, max_attempts=5)

    try:
        results = await asyncio.gather(*(ender(d, i) for i, d in enumerate(databases)))
    finally:
        for d in databases:
            await d.dispose()
    assert Counter(results) == Counter({None: 9, "pending": 1})
    run, row = await run_row(setup, task_id), await task_row(setup, task_id)
    assert run is not None and run["generation"] == g + 1 and run["failures"] == 1
    assert row["status"] == "pending" and row["error_log"].count("ended: ender") == 1
    assert await ranks_of(setup, task_id) == {}
