"""Maintenance sweeps on SQLite and MariaDB: exact cut-offs, dry runs, and the lease that lets one agent run each."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import Database, create_database
from app.db.queries import operations as ops
from app.db.schema import (
    checkpoints,
    client_logs,
    clients,
    performance_metrics,
    task_assignments,
    task_logs,
    task_metrics,
    task_runs,
    tasks,
)
from app.operations.maintenance import SWEEPS, Maintenance
from tests.operations import db_snapshot, make_settings, utcnow

DAY = timedelta(days=1)


async def _client(conn: AsyncConnection, client_id: str, status: str, last_seen_ago: timedelta) -> None:
    await conn.execute(insert(clients).values(id=client_id, cpu_info={}, ram_info={}, last_seen=utcnow() - last_seen_ago,
                                              status=status))


async def _task(conn: AsyncConnection, status: str, updated_ago: timedelta) -> int:
    now = utcnow()
    result = await conn.execute(insert(tasks).values(type="training", requirements={}, status=status,
                                                     created_at=now - updated_ago - DAY, updated_at=now - updated_ago))
    return int(result.inserted_primary_key[0])


async def _dependents(conn: AsyncConnection, task_id: int, client_id: str) -> None:
    """One recent row in every table that cascades from tasks."""
    now = utcnow()
    await conn.execute(insert(task_assignments).values(task_id=task_id, client_id=client_id, status="completed", rank=0,
                                                       assigned_at=now, updated_at=now))
    await conn.execute(insert(checkpoints).values(task_id=task_id, client_id=client_id, path="/ck", type="final",
                                                  created_at=now))
    await conn.execute(insert(task_logs).values(task_id=task_id, client_id=client_id, log_type="info", message="m",
                                                created_at=now))
    await conn.execute(insert(performance_metrics).values(client_id=client_id, task_id=task_id, metric_type="cpu",
                                                          value=1.0, recorded_at=now))
    await conn.execute(insert(task_metrics).values(task_id=task_id, step=1, name="loss", value=1.0, recorded_at=now))
    await conn.execute(insert(task_runs).values(task_id=task_id, generation=1, updated_at=now))


async def _farm_with_cutoffs(db: Database) -> dict[str, Any]:
    """Rows on both sides of every sweep's cut-off (default settings); returns what each sweep must remove."""
    async with db.begin() as conn:
        await _client(conn, "stale", "active", timedelta(minutes=6))       # inactive_after 5 min: marked
        await _client(conn, "fresh", "active", timedelta(minutes=4))       # kept active
        await _client(conn, "gone", "inactive", timedelta(days=3))         # already inactive: not counted
        old_done = await _task(conn, "completed", 31 * DAY)                # retention 30 days: deleted
        old_failed = await _task(conn, "failed", 31 * DAY)                 # deleted
        recent_done = await _task(conn, "completed", 29 * DAY)             # kept
        old_pending = await _task(conn, "pending", 40 * DAY)               # not completed/failed: kept
        old_error = await _task(conn, "error", 40 * DAY)                   # kept
        await _dependents(conn, old_done, "fresh")
        await _dependents(conn, recent_done, "fresh")
        now = utcnow()
        orphan_ids = []
        for rank, (status, ago) in enumerate((("assigned", timedelta(minutes=61)), ("assigned", timedelta(minutes=59)),
                                              ("training", timedelta(hours=2)))):
            result = await conn.execute(insert(task_assignments).values(
                task_id=old_pending, client_id="fresh", status=status, rank=rank, assigned_at=now - ago,
                updated_at=now - ago))
            orphan_ids.append(int(result.inserted_primary_key[0]))
        log_ids: dict[str, list[int]] = {"task_logs": [], "client_logs": []}
        for ago in (31 * DAY, 29 * DAY):
            r1 = await conn.execute(insert(task_logs).values(task_id=old_error, client_id="fresh", log_type="info",
                                                             message="x", created_at=now - ago))
            r2 = await conn.execute(insert(client_logs).values(client_id="fresh", log_type="warning", message="y",
                                                               created_at=now - ago))
            log_ids["task_logs"].append(int(r1.inserted_primary_key[0]))
            log_ids["client_logs"].append(int(r2.inserted_primary_key[0]))
        metric_ids: dict[str, list[int]] = {"performance_metrics": [], "task_metrics": []}
        for ago in (8 * DAY, 6 * DAY):
            r1 = await conn.execute(insert(performance_metrics).values(client_id="fresh", task_id=None,
                                                                       metric_type="cpu", value=2.0,
                                                                       recorded_at=now - ago))
            r2 = await conn.execute(insert(task_metrics).values(task_id=old_error, step=2, name="loss", value=2.0,
                                                                recorded_at=now - ago))
            metric_ids["performance_metrics"].append(int(r1.inserted_primary_key[0]))
            metric_ids["task_metrics"].append(int(r2.inserted_primary_key[0]))
    return {
        "tasks": {old_done, old_failed},
        "cascade_of": old_done,
        "orphan": orphan_ids[0],
        "logs": {name: ids[0] for name, ids in log_ids.items()},
        "metrics": {name: ids[0] for name, ids in metric_ids.items()},
    }


def _expected_after(before: dict[str, list[dict[str, Any]]], removed: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    after = copy.deepcopy(before)
    for row in after["clients"]:
        if row["id"] == "stale":
            row["status"] = "inactive"
    after["tasks"] = [r for r in after["tasks"] if r["id"] not in removed["tasks"]]
    for name in ("task_assignments", "checkpoints", "task_logs", "performance_metrics", "task_metrics", "task_runs"):
        after[name] = [r for r in after[name] if r.get("task_id") not in removed["tasks"]]
    after["task_assignments"] = [r for r in after["task_assignments"] if r["id"] != removed["orphan"]]
    for name, row_id in {**removed["logs"], **removed["metrics"]}.items():
        after[name] = [r for r in after[name] if r["id"] != row_id]
    return after


EXPECTED_COUNTS = {
    "inactive_clients": {"clients": 1},
    "orphaned_assignments": {"task_assignments": 1},
    "old_tasks": {"tasks": 2, "task_assignments": 1, "checkpoints": 1, "task_logs": 1, "performance_metrics": 1,
                  "task_metrics": 1, "task_runs": 1},
    "old_logs": {"task_logs": 1, "client_logs": 1},
    "old_metrics": {"performance_metrics": 1, "task_metrics": 1},
}


async def test_every_sweep_removes_exactly_its_rows(db: Database, tmp_path: Path) -> None:
    """Dry run counts and changes nothing; the real run removes exactly the rows past each cut-off and records it."""
    removed = await _farm_with_cutoffs(db)
    before = await db_snapshot(db)
    maintenance = Maintenance(db, make_settings(tmp_path), "agent-1")

    dry = await maintenance.run_all(dry_run=True)
    assert dry == EXPECTED_COUNTS
    assert await db_snapshot(db) == before  # not even maintenance_runs is written

    done = await maintenance.run_all()
    assert done == EXPECTED_COUNTS
    after = await db_snapshot(db)
    runs = {row["sweep"]: row for row in after.pop("maintenance_runs")}
    before.pop("maintenance_runs")
    assert after == _expected_after(before, removed)
    assert set(runs) == set(SWEEPS)
    for sweep, row in runs.items():
        assert row["last_result"] == EXPECTED_COUNTS[sweep]
        assert row["holder"] == "agent-1" and row["lease_until"] is None
        assert abs((row["last_run_at"] - utcnow()).total_seconds()) < 60

    again = await maintenance.run_all()
    assert all(sum(counts.values()) == 0 for counts in again.values())
    history = await maintenance.history()
    assert [row["sweep"] for row in history] == list(SWEEPS)
    assert history[0]["interval_seconds"] == 30.0 and history[1]["interval_seconds"] == 3600.0


async def test_admin_database_does_the_deleting(db: Database, tmp_path: Path) -> None:
    """With admin_db the deleting sweeps run through it (a second engine on the same database)."""
    await _farm_with_cutoffs(db)
    admin = create_database(db.url.render_as_string(hide_password=False))
    try:
        results = await Maintenance(db, make_settings(tmp_path), "agent-1", admin).run_all()
        assert results == EXPECTED_COUNTS
        assert admin.engine.pool.checkedout() == 0 and "Connections in pool" in admin.engine.pool.status()
    finally:
        await admin.dispose()


async def test_acquire_lease_is_exclusive_under_contention(db: Database) -> None:
    """Eight holders on their own connections race for one lease: exactly one gets it; it renews; others wait."""
    second = create_database(db.url.render_as_string(hide_password=False))

    async def attempt(index: int) -> bool:
        async with (second if index % 2 else db).begin() as conn:
            return await ops.acquire_lease(conn, "old_tasks", f"holder-{index}", 30)

    try:
        outcomes = await asyncio.gather(*(attempt(i) for i in range(8)))
        assert sum(outcomes) == 1
        winner = outcomes.index(True)
        async with db.begin() as conn:
            assert await ops.acquire_lease(conn, "old_tasks", f"holder-{winner}", 30)  # its own: renewed
            assert not await ops.acquire_lease(conn, "old_tasks", "someone-else", 30)
            row = await ops.get_run(conn, "old_tasks")
        assert row is not None and row["holder"] == f"holder-{winner}"
    finally:
        await second.dispose()


async def test_a_held_lease_blocks_until_it_expires(db: Database, tmp_path: Path) -> None:
    """Another holder's live lease keeps a sweep from running here, forced or due; once it expires it runs."""
    async with db.begin() as conn:
        assert await ops.acquire_lease(conn, "old_logs", "other-agent", 2)
    maintenance = Maintenance(db, make_settings(tmp_path), "agent-1")
    forced = await maintenance.run_all()
    assert "other-agent" in forced["old_logs"]["skipped"]
    assert "old_logs" not in await maintenance.run_due()
    async with db.connect() as conn:
        row = await ops.get_run(conn, "old_logs")
    assert row is not None and row["holder"] == "other-agent" and row["last_run_at"] is None
    await asyncio.sleep(3.1)  # DATETIME has whole seconds
    assert await maintenance.run_due() == {"old_logs": {"task_logs": 0, "client_logs": 0}}
    async with db.connect() as conn:
        row = await ops.get_run(conn, "old_logs")
    assert row is not None and row["holder"] == "agent-1" and row["last_result"] == {"task_logs": 0, "client_logs": 0}


async def test_two_agents_never_run_the_same_sweep_together(db: Database, tmp_path: Path) -> None:
    """Two Maintenance objects (own engines) call run_due concurrently for 3 s: each hourly sweep runs once in
    all, and the 1 s inactive_clients sweep never on both in one round nor more than once per second."""
    settings = make_settings(tmp_path, inactive_after="4s")
    other = create_database(db.url.render_as_string(hide_password=False))
    agents = [Maintenance(db, settings, "agent-a"), Maintenance(other, settings, "agent-b")]
    runs: dict[str, list[str]] = {sweep: [] for sweep in SWEEPS}
    try:
        start = time.monotonic()
        while time.monotonic() - start < 3.0:
            results = await asyncio.gather(*(agent.run_due() for agent in agents))
            for agent, result in zip(agents, results, strict=False):
                for sweep in result:
                    runs[sweep].append(agent.client_id)
            assert not set(results[0]) & set(results[1])
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
    finally:
        await other.dispose()
    for sweep in ("orphaned_assignments", "old_tasks", "old_logs", "old_metrics"):
        assert len(runs[sweep]) == 1, (sweep, runs[sweep])
    assert 1 <= len(runs["inactive_clients"]) <= int(elapsed) + 2, runs["inactive_clients"]


async def test_loop_marks_a_stale_client_and_reports_it(db: Database, tmp_path: Path) -> None:
    """The agent's loop marks a client inactive within its interval and tells the agent's event log."""
    async with db.begin() as conn:
        await _client(conn, "stale", "active", timedelta(seconds=10))
    events: list[tuple[str, str]] = []
    maintenance = Maintenance(db, make_settings(tmp_path, inactive_after="4s"), "agent-1",
                              on_event=lambda kind, message: events.append((kind, message)))
    task = asyncio.create_task(maintenance.loop())
    try:
        deadline = time.monotonic() + 10
        while not any("marked 1 client(s) inactive" in message for _, message in events):
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with db.connect() as conn:
        row = await ops.get_run(conn, "inactive_clients")
    assert row is not None and row["last_result"] == {"clients": 1}


async def test_last_result_must_be_json(db: Database) -> None:
    """maintenance_runs.last_result has the JSON check on both backends; NULL is allowed."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    async with db.begin() as conn:
        await conn.execute(text("INSERT INTO maintenance_runs (sweep, last_result) VALUES ('a', NULL), ('b', '{\"n\": 1}')"))
    for bad in ("{not json", "", "{'single': 'quotes'}"):
        with pytest.raises(DBAPIError):
            async with db.begin() as conn:
                await conn.execute(text("INSERT INTO maintenance_runs (sweep, last_result) VALUES ('c', :bad)"),
                                   {"bad": bad})
        with pytest.raises(DBAPIError):
            async with db.begin() as conn:
                await conn.execute(text("UPDATE maintenance_runs SET last_result = :bad WHERE sweep = 'b'"), {"bad": bad})
    async with db.connect() as conn:
        assert (await ops.get_run(conn, "b") or {})["last_result"] == {"n": 1}
        assert await ops.get_run(conn, "c") is None
