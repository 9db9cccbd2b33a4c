"""The seed's Common and Maintenance Queries on SQLite and MariaDB, with data whose answers are known."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import Database
from app.db.queries import assignments as assignment_queries
from app.db.queries import clients as client_queries
from app.db.queries import maintenance
from app.db.queries import metrics as metric_queries
from app.db.queries import tasks as task_queries
from app.db.schema import checkpoints, clients, performance_metrics, task_assignments, task_logs, tasks

SEED = Path(__file__).resolve().parents[1] / "data" / "ai-farm-schema.md"

# Run a test on MariaDB only (the seed's SQL is MySQL's): overrides conftest's backend parameter.
mysql_only = pytest.mark.parametrize("database_url", ["mysql"], indirect=True)

SNAPSHOT_TABLES = (clients, tasks, task_assignments, checkpoints, task_logs, performance_metrics)


# --- helpers ---------------------------------------------------------------------------------------


def utcnow() -> datetime:
    """Now in UTC, naive and to the second, as both backends store DATETIME (MySQL sessions run in UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


async def add_client(
    conn: AsyncConnection, client_id: str, *, status: str = "active", last_seen: datetime | None = None
) -> str:
    """Insert a client row and return its id."""
    await conn.execute(
        insert(clients).values(
            id=client_id,
            cpu_info={"cores": 8},
            ram_info={"total_mb": 16384},
            gpu_info=[{"name": "RTX", "memory_mb": 8192}],
            session_info=None,
            last_seen=last_seen or utcnow(),
            status=status,
            version="1.0",
            hostname=f"{client_id}.lan",
        )
    )
    return client_id


async def add_task(
    conn: AsyncConnection,
    *,
    type: str = "training",
    status: str = "pending",
    priority: int = 0,
    config: dict[str, Any] | None = None,
    client_id: str | None = None,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
) -> int:
    """Insert a task with insert_task, then set its client and explicit times with update(tasks)."""
    task_id = await task_queries.insert_task(
        conn, type=type, requirements={"min_ram": 1024}, config=config, priority=priority, status=status
    )
    changes: dict[str, Any] = {}
    if client_id is not None:
        changes["client_id"] = client_id
    if created_at is not None:
        changes["created_at"] = created_at
    if updated_at is not None:
        changes["updated_at"] = updated_at
    if changes:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(**changes))
    return task_id


async def add_assignment(
    conn: AsyncConnection,
    task_id: int,
    client_id: str,
    rank: int,
    *,
    status: str = "assigned",
    updated_at: datetime | None = None,
) -> int:
    """Insert an assignment (database-default times), optionally setting updated_at explicitly after."""
    result = await conn.execute(
        insert(task_assignments).values(task_id=task_id, client_id=client_id, rank=rank, status=status)
    )
    assignment_id = int(result.inserted_primary_key[0])
    if updated_at is not None:
        await conn.execute(
            update(task_assignments).where(task_assignments.c.id == assignment_id).values(updated_at=updated_at)
        )
    return assignment_id


async def add_task_children(conn: AsyncConnection, task_id: int, client_id: str, rank: int = 0) -> None:
    """One assignment, checkpoint, task log and performance metric that belong to the task."""
    now = utcnow()
    await add_assignment(conn, task_id, client_id, rank, status="completed")
    await conn.execute(
        insert(checkpoints).values(
            task_id=task_id, client_id=client_id, path=f"/ckpt/{task_id}.pt", type="final", metrics=None, created_at=now
        )
    )
    await conn.execute(
        insert(task_logs).values(task_id=task_id, client_id=client_id, log_type="info", message="done", created_at=now)
    )
    await conn.execute(
        insert(performance_metrics).values(
            client_id=client_id, task_id=task_id, metric_type="loss", value=0.5, recorded_at=now
        )
    )


async def snapshot(conn: AsyncConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables the queries touch, in id order, as this connection sees them."""
    return {
        table.name: [tuple(row) for row in await conn.execute(select(table).order_by(table.c.id))]
        for table in SNAPSHOT_TABLES
    }


async def db_snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables the queries touch, as committed."""
    async with db.connect() as conn:
        return await snapshot(conn)


async def ids(conn: AsyncConnection, table: Table, *where: Any) -> set[Any]:
    """The ids of the table's rows matching the conditions."""
    return set((await conn.execute(select(table.c.id).where(*where))).scalars())


def seed_queries(section: str) -> dict[str, str]:
    """The SQL statements of one `## ` section of the seed doc, keyed by the `-- comment` that names each."""
    doc = SEED.read_text(encoding="utf-8")
    start = doc.index(f"\n## {section}\n")
    end = doc.find("\n## ", start + 1)
    out: dict[str, str] = {}
    for block in re.findall(r"```sql\n(.*?)```", doc[start : end if end != -1 else None], re.S):
        for statement in block.split(";"):
            lines = statement.strip().splitlines()
            if not lines:
                continue
            assert lines[0].startswith("-- "), lines[0]
            out[lines[0][3:].strip()] = "\n".join(lines[1:]).strip()
    return out


async def run_seed(conn: AsyncConnection, sql: str) -> list[dict[str, Any]]:
    """Run seed SQL exactly as given (no parameter processing) and return its rows as dicts."""
    result = await conn.exec_driver_sql(sql)
    return [dict(row._mapping) for row in result] if result.returns_rows else []


# --- 1. active tasks with client info --------------------------------------------------------------


async def test_active_tasks_are_running_ones_by_priority_then_age_with_client_info(db: Database) -> None:
    """Only running tasks, priority DESC then created_at ASC, with the joined client's status and last_seen."""
    base = utcnow() - timedelta(hours=3)
    alpha_seen = base + timedelta(hours=2)
    beta_seen = base + timedelta(hours=1)
    async with db.begin() as conn:
        await add_client(conn, "alpha", last_seen=alpha_seen)
        await add_client(conn, "beta", status="inactive", last_seen=beta_seen)
        # Inserted in an order unlike the expected one, so neither id nor insertion order gives the answer.
        late_low = await add_task(conn, status="running", priority=1, client_id="alpha", created_at=base + timedelta(minutes=5))
        negative = await add_task(conn, status="running", priority=-2, client_id="alpha", created_at=base)
        early_low = await add_task(conn, status="running", priority=1, client_id="beta", created_at=base + timedelta(minutes=1))
        orphan = await add_task(conn, status="running", priority=9, created_at=base + timedelta(minutes=10))
        for status in ("pending", "completed", "failed", "error"):
            await add_task(conn, status=status, priority=50, client_id="alpha", created_at=base)
    async with db.connect() as conn:
        rows = await task_queries.active_tasks_with_clients(conn)
    assert [row["id"] for row in rows] == [orphan, early_low, late_low, negative]
    assert {row["status"] for row in rows} == {"running"}
    info = {row["id"]: (row["client_id"], row["client_status"], row["last_seen"]) for row in rows}
    assert info == {
        orphan: (None, None, None),
        early_low: ("beta", "inactive", beta_seen),
        late_low: ("alpha", "active", alpha_seen),
        negative: ("alpha", "active", alpha_seen),
    }


async def test_active_tasks_is_empty_without_running_tasks(db: Database) -> None:
    """No running task, no rows (a pending task with a client is not active)."""
    async with db.begin() as conn:
        await add_client(conn, "alpha")
        await add_task(conn, status="pending", client_id="alpha")
    async with db.connect() as conn:
        assert await task_queries.active_tasks_with_clients(conn) == []


# --- 2. completion statistics ----------------------------------------------------------------------


async def test_completion_statistics_per_type(db: Database) -> None:
    """Per type: total, completed, failed, and the mean seconds from created_at to updated_at of completed tasks."""
    start = datetime(2024, 2, 28, 23, 59, 30)  # a leap day and a month end inside some durations
    async with db.begin() as conn:
        for status, seconds in (("completed", 60), ("completed", 180), ("failed", 1000), ("running", 5000), ("pending", 7)):
            await add_task(conn, type="training", status=status, created_at=start, updated_at=start + timedelta(seconds=seconds))
        for status, seconds in (("completed", 86400 + 61), ("completed", 120), ("error", 30)):
            await add_task(conn, type="evaluation", status=status, created_at=start, updated_at=start + timedelta(seconds=seconds))
        for status in ("failed", "failed", "pending"):
            await add_task(conn, type="inference", status=status, created_at=start, updated_at=start + timedelta(seconds=9))
    async with db.connect() as conn:
        rows = await task_queries.completion_statistics(conn)
    assert rows == [
        {"type": "evaluation", "total": 3, "completed": 2, "failed": 0, "avg_completion_time": (86461 + 120) / 2},
        {"type": "inference", "total": 3, "completed": 0, "failed": 2, "avg_completion_time": None},
        {"type": "training", "total": 5, "completed": 2, "failed": 1, "avg_completion_time": 120.0},
    ]


async def test_completion_time_is_exact_for_every_whole_minute(db: Database) -> None:
    """Durations of 1..120 minutes come back as exactly 60*n seconds (no floating-point truncation)."""
    start = datetime(2024, 1, 1, 0, 0, 0)
    async with db.begin() as conn:
        for minutes in range(1, 121):
            await add_task(
                conn,
                type=f"m{minutes:03d}",
                status="completed",
                created_at=start,
                updated_at=start + timedelta(minutes=minutes),
            )
    async with db.connect() as conn:
        rows = await task_queries.completion_statistics(conn)
    assert {row["type"]: row["avg_completion_time"] for row in rows} == {
        f"m{minutes:03d}": float(minutes * 60) for minutes in range(1, 121)
    }


# --- 3. active clients with task counts -----------------------------------------------------------


async def test_active_clients_with_task_counts(db: Database) -> None:
    """DISTINCT open (assigned/training) tasks per active client, and the latest open assignment's updated_at."""
    t0 = datetime(2024, 5, 1, 12, 0, 0)
    async with db.begin() as conn:
        for client_id in ("busy", "finished", "idle"):
            await add_client(conn, client_id)
        await add_client(conn, "gone", status="inactive")
        t1, t2, t3, t4 = [await add_task(conn, status="running") for _ in range(4)]
        await add_assignment(conn, t1, "busy", 0, status="assigned", updated_at=t0 + timedelta(minutes=10))
        await add_assignment(conn, t1, "busy", 1, status="training", updated_at=t0 + timedelta(minutes=5))  # same task again
        await add_assignment(conn, t2, "busy", 0, status="training", updated_at=t0 + timedelta(minutes=20))
        await add_assignment(conn, t3, "busy", 0, status="completed", updated_at=t0 + timedelta(minutes=50))  # not open
        await add_assignment(conn, t4, "finished", 0, status="completed", updated_at=t0 + timedelta(minutes=30))
        await add_assignment(conn, t2, "finished", 1, status="failed", updated_at=t0 + timedelta(minutes=40))
        await add_assignment(conn, t4, "gone", 1, status="training", updated_at=t0 + timedelta(minutes=60))
    async with db.connect() as conn:
        rows = await client_queries.active_clients_with_task_counts(conn)
    assert {row["id"]: (row["active_tasks"], row["last_task_update"]) for row in rows} == {
        "busy": (2, t0 + timedelta(minutes=20)),
        "finished": (0, None),
        "idle": (0, None),
    }
    busy = next(row for row in rows if row["id"] == "busy")
    assert (busy["status"], busy["hostname"], busy["cpu_info"]) == ("active", "busy.lan", {"cores": 8})


# --- 4. client performance over the last hour -----------------------------------------------------


async def test_client_performance_over_the_last_hour(db: Database) -> None:
    """avg/min/max per client and metric type over the last hour; older rows do not count."""
    now = utcnow()
    async with db.begin() as conn:
        await add_client(conn, "a")
        await add_client(conn, "b")
        task_id = await add_task(conn, status="running")
        # Values exactly representable in single precision: MySQL's FLOAT column is 4 bytes.
        recent = [("gpu_util", 10.0), ("gpu_util", 20.0), ("gpu_util", 45.0), ("ram_mb", 2048.0)]
        await metric_queries.record_metrics(conn, "a", recent)
        await metric_queries.record_metrics(conn, "b", [("gpu_util", 99.5)], task_id=task_id)
        rows = [
            ("a", "gpu_util", 5.0, now - timedelta(minutes=59)),  # inside the window
            ("a", "gpu_util", 1000.0, now - timedelta(hours=2)),  # would change avg and max
            ("a", "gpu_util", -1000.0, now - timedelta(minutes=61)),  # would change avg and min
            ("b", "only_old", 1.0, now - timedelta(hours=2)),  # would add a group
        ]
        for client_id, metric_type, value, recorded_at in rows:
            await conn.execute(
                insert(performance_metrics).values(
                    client_id=client_id, metric_type=metric_type, value=value, recorded_at=recorded_at
                )
            )
    async with db.connect() as conn:
        result = await metric_queries.client_performance(conn)
    assert result == [
        {"client_id": "a", "metric_type": "gpu_util", "avg_value": 20.0, "min_value": 5.0, "max_value": 45.0},
        {"client_id": "a", "metric_type": "ram_mb", "avg_value": 2048.0, "min_value": 2048.0, "max_value": 2048.0},
        {"client_id": "b", "metric_type": "gpu_util", "avg_value": 99.5, "min_value": 99.5, "max_value": 99.5},
    ]


async def test_record_metrics_stores_rows_at_database_now(db: Database) -> None:
    """record_metrics writes one row per value, with the task id and a recorded_at of about now (UTC)."""
    async with db.begin() as conn:
        await add_client(conn, "a")
        task_id = await add_task(conn)
        assert await metric_queries.record_metrics(conn, "a", [("loss", 0.25), ("acc", 0.5)], task_id=task_id) == 2
        assert await metric_queries.record_metrics(conn, "a", []) == 0
    async with db.connect() as conn:
        rows = (await conn.execute(select(performance_metrics).order_by(performance_metrics.c.id))).all()
    assert [(r.client_id, r.task_id, r.metric_type, r.value) for r in rows] == [
        ("a", task_id, "loss", 0.25),
        ("a", task_id, "acc", 0.5),
    ]
    for row in rows:
        assert abs(row.recorded_at - utcnow()) < timedelta(seconds=30)


# --- 5. distributed progress ----------------------------------------------------------------------


async def test_distributed_progress_counts_clients_and_completed_shards(db: Database) -> None:
    """Only tasks whose config has the boolean "distributed": true; clients, completed shards, n_clients."""
    async with db.begin() as conn:
        for client_id in ("c1", "c2", "c3"):
            await add_client(conn, client_id)
        dist = await add_task(conn, status="running", config={"distributed": True, "n_clients": 3})
        await add_assignment(conn, dist, "c1", 0, status="completed")
        await add_assignment(conn, dist, "c2", 1, status="training")
        await add_assignment(conn, dist, "c1", 2, status="completed")
        fresh = await add_task(conn, status="pending", config={"distributed": True, "n_clients": 2})
        excluded = [
            await add_task(conn, status="running", config={"distributed": False, "n_clients": 3}),
            await add_task(conn, status="running", config={"n_clients": 3}),
            await add_task(conn, status="running", config=None),
            await add_task(conn, status="running", config={"distributed": "true", "n_clients": 3}),
            await add_task(conn, status="running", config={"distributed": [True], "n_clients": 3}),
            await add_task(conn, status="running", config={"distributed": 1, "n_clients": 3}),
        ]
        for task_id in excluded:
            await add_assignment(conn, task_id, "c3", 0, status="completed")
    async with db.connect() as conn:
        rows = await assignment_queries.distributed_progress(conn)
        only_fresh = await assignment_queries.distributed_progress(conn, fresh)
        only_excluded = await assignment_queries.distributed_progress(conn, excluded[0])
    assert rows == [
        {"id": dist, "status": "running", "active_clients": 2, "completed_shards": 2, "required_clients": 3},
        {"id": fresh, "status": "pending", "active_clients": 0, "completed_shards": 0, "required_clients": 2},
    ]
    assert only_fresh == [rows[1]]
    assert only_excluded == []


# --- 6. available ranks ---------------------------------------------------------------------------


async def test_available_ranks(db: Database) -> None:
    """Ranks below n_clients that no assignment of this task holds, for any n_clients."""
    async with db.begin() as conn:
        for client_id in ("c1", "c2"):
            await add_client(conn, client_id)
        three = await add_task(conn, config={"distributed": True, "n_clients": 3})
        await add_assignment(conn, three, "c1", 1)
        seven = await add_task(conn, config={"distributed": True, "n_clients": 7})
        await add_assignment(conn, seven, "c1", 0)  # rank 0 of another task must not hide rank 0 of `three`
        await add_assignment(conn, seven, "c2", 5, status="completed")
        one = await add_task(conn, config={"distributed": True, "n_clients": 1})
        await add_assignment(conn, one, "c2", 0)
        hundred = await add_task(conn, config={"distributed": True, "n_clients": 100})
        no_n_clients = await add_task(conn, config={"distributed": True})
        no_config = await add_task(conn, config=None)
    async with db.connect() as conn:
        assert await assignment_queries.available_ranks(conn, three) == [0, 2]
        assert await assignment_queries.available_ranks(conn, seven) == [1, 2, 3, 4, 6]
        assert await assignment_queries.available_ranks(conn, one) == []
        assert await assignment_queries.available_ranks(conn, hundred) == list(range(100))
        assert await assignment_queries.available_ranks(conn, no_n_clients) == []
        assert await assignment_queries.available_ranks(conn, no_config) == []
        assert await assignment_queries.available_ranks(conn, 999_999) == []


# --- 7. cleanups -----------------------------------------------------------------------------------


async def add_cleanup_rows(conn: AsyncConnection) -> dict[str, Any]:
    """Rows on both sides of each cleanup's cut-off; returns their ids by name."""
    now = utcnow()
    days, minutes = timedelta(days=1), timedelta(minutes=1)
    out: dict[str, Any] = {}
    # clients: last seen 6 and 4 minutes ago (active), and long ago but already inactive
    out["stale"] = await add_client(conn, "stale", last_seen=now - 6 * minutes)
    out["fresh"] = await add_client(conn, "fresh", last_seen=now - 4 * minutes)
    out["asleep"] = await add_client(conn, "asleep", status="inactive", last_seen=now - 3 * days)
    # tasks: completed/failed 31 days ago go; 29 days ago, or another status, stay
    for name, status, age in (
        ("old_completed", "completed", 31 * days),
        ("old_failed", "failed", 31 * days),
        ("recent_completed", "completed", 29 * days),
        ("recent_failed", "failed", 29 * days),
        ("old_error", "error", 31 * days),
        ("old_running", "running", 31 * days),
        ("old_pending", "pending", 31 * days),
    ):
        out[name] = await add_task(conn, status=status, client_id="fresh", created_at=now - 40 * days, updated_at=now - age)
    await add_task_children(conn, out["old_completed"], "fresh")
    await add_task_children(conn, out["recent_completed"], "fresh")
    # assignments (of a running task): 'assigned' 61 minutes ago goes; 59 minutes, or another status, stays
    for rank, (name, status, age) in enumerate(
        (
            ("a_old_assigned", "assigned", 61 * minutes),
            ("a_recent_assigned", "assigned", 59 * minutes),
            ("a_old_training", "training", 61 * minutes),
            ("a_old_completed", "completed", 120 * minutes),
            ("a_old_failed", "failed", 120 * minutes),
        )
    ):
        out[name] = await add_assignment(conn, out["old_running"], "fresh", rank, status=status, updated_at=now - age)
    out["a_old_assigned_updated_at"] = now - 61 * minutes
    # unrelated rows that must survive every cleanup
    await conn.execute(
        insert(task_logs).values(task_id=None, client_id="stale", log_type="warning", message="x", created_at=now)
    )
    await conn.execute(
        insert(performance_metrics).values(client_id="stale", task_id=None, metric_type="gpu", value=1.0, recorded_at=now)
    )
    return out


async def test_delete_old_tasks(db: Database) -> None:
    """Completed/failed tasks updated over 30 days ago are deleted, with their assignments, checkpoints, logs, metrics."""
    async with db.begin() as conn:
        rows = await add_cleanup_rows(conn)
    before = await db_snapshot(db)
    async with db.begin() as conn:
        assert await maintenance.delete_old_tasks(conn, dry_run=True) == 2
        assert await maintenance.delete_old_tasks(conn, older_than_days=28, dry_run=True) == 4
    assert await db_snapshot(db) == before
    async with db.begin() as conn:
        assert await maintenance.delete_old_tasks(conn) == 2
    async with db.connect() as conn:
        assert await ids(conn, tasks) == {
            rows[name] for name in ("recent_completed", "recent_failed", "old_error", "old_running", "old_pending")
        }
        gone, kept = rows["old_completed"], rows["recent_completed"]
        for table in (task_assignments, checkpoints, task_logs, performance_metrics):
            assert await ids(conn, table, table.c.task_id == gone) == set(), table.name
            assert len(await ids(conn, table, table.c.task_id == kept)) == 1, table.name
        assert len(await ids(conn, task_assignments, task_assignments.c.task_id == rows["old_running"])) == 5
        assert len(await ids(conn, task_logs, task_logs.c.task_id.is_(None))) == 1
        assert len(await ids(conn, performance_metrics, performance_metrics.c.task_id.is_(None))) == 1
        assert await ids(conn, clients) == {"stale", "fresh", "asleep"}
    async with db.begin() as conn:
        assert await maintenance.delete_old_tasks(conn) == 0


async def test_mark_inactive_clients(db: Database) -> None:
    """Active clients unseen for over 5 minutes become inactive; nothing else about any client changes."""
    async with db.begin() as conn:
        await add_cleanup_rows(conn)
    async with db.connect() as conn:
        seen_before = {row.id: row.last_seen for row in await conn.execute(select(clients))}
    before = await db_snapshot(db)
    async with db.begin() as conn:
        assert await maintenance.mark_inactive_clients(conn, dry_run=True) == 1
        assert await maintenance.mark_inactive_clients(conn, older_than_seconds=180, dry_run=True) == 2
    assert await db_snapshot(db) == before
    async with db.begin() as conn:
        assert await maintenance.mark_inactive_clients(conn) == 1
    async with db.connect() as conn:
        after = {row.id: (row.status, row.last_seen) for row in await conn.execute(select(clients))}
    assert after == {
        "stale": ("inactive", seen_before["stale"]),
        "fresh": ("active", seen_before["fresh"]),
        "asleep": ("inactive", seen_before["asleep"]),
    }
    async with db.begin() as conn:
        assert await maintenance.mark_inactive_clients(conn) == 0


async def test_delete_orphaned_assignments(db: Database) -> None:
    """Only 'assigned' assignments not updated for over an hour are deleted."""
    async with db.begin() as conn:
        rows = await add_cleanup_rows(conn)
    async with db.connect() as conn:
        stored = (
            await conn.execute(select(task_assignments.c.updated_at).where(task_assignments.c.id == rows["a_old_assigned"]))
        ).scalar_one()
    assert stored == rows["a_old_assigned_updated_at"]  # the explicit value, not ON UPDATE's now
    before = await db_snapshot(db)
    async with db.begin() as conn:
        assert await maintenance.delete_orphaned_assignments(conn, dry_run=True) == 1
        assert await maintenance.delete_orphaned_assignments(conn, older_than_seconds=30 * 60, dry_run=True) == 2
    assert await db_snapshot(db) == before
    async with db.begin() as conn:
        assert await maintenance.delete_orphaned_assignments(conn) == 1
    async with db.connect() as conn:
        of_running_task = await ids(conn, task_assignments, task_assignments.c.task_id == rows["old_running"])
        everywhere = await ids(conn, task_assignments)
    assert of_running_task == {
        rows[name] for name in ("a_recent_assigned", "a_old_training", "a_old_completed", "a_old_failed")
    }
    assert len(everywhere) == 4 + 2  # plus the completed ones of old_completed and recent_completed
    async with db.begin() as conn:
        assert await maintenance.delete_orphaned_assignments(conn) == 0


# --- 8. the seed's own SQL, verbatim, on MariaDB ---------------------------------------------------


def test_seed_doc_has_the_queries_these_tests_run() -> None:
    """The seed doc parses into the six Common Queries and three cleanups (so no verbatim test runs nothing)."""
    assert set(seed_queries("Common Queries")) == {
        "Get active tasks with client info",
        "Get task completion statistics",
        "Get active clients with task counts",
        "Get client performance metrics",
        "Get distributed task progress",
        "Get available ranks for task",
    }
    assert {"Delete old completed tasks", "Remove inactive clients", "Clean orphaned assignments"} <= set(
        seed_queries("Maintenance Queries")
    )
    assert all(sql.upper().startswith("SELECT") for sql in seed_queries("Common Queries").values())


async def add_farm(conn: AsyncConnection) -> dict[str, Any]:
    """A small farm with an answer for each Common Query; returns ids and times by name."""
    now = utcnow()
    t0 = now - timedelta(days=2)
    out: dict[str, Any] = {"now": now, "t0": t0}
    await add_client(conn, "alpha", last_seen=now)
    await add_client(conn, "beta", last_seen=now - timedelta(minutes=2))
    await add_client(conn, "gamma", status="inactive", last_seen=now - timedelta(days=1))
    await add_client(conn, "delta", last_seen=now)
    new = lambda **kw: add_task(conn, **kw)  # noqa: E731
    out["dist"] = await new(
        status="running", priority=5, client_id="alpha", config={"distributed": True, "n_clients": 3}, created_at=t0
    )
    out["dist_fresh"] = await new(config={"distributed": True, "n_clients": 2}, created_at=t0)
    out["single"] = await new(status="running", priority=5, config={"distributed": False}, created_at=t0 - timedelta(hours=1))
    out["numeric"] = await new(
        type="evaluation", status="running", priority=1, client_id="gamma", config={"distributed": 1, "n_clients": 2}, created_at=t0
    )
    out["done1"] = await new(status="completed", created_at=t0, updated_at=t0 + timedelta(seconds=60))
    out["done2"] = await new(type="evaluation", status="completed", created_at=t0, updated_at=t0 + timedelta(seconds=121))
    out["done3"] = await new(status="completed", created_at=t0, updated_at=t0 + timedelta(seconds=180))
    out["failed"] = await new(status="failed", created_at=t0, updated_at=t0 + timedelta(seconds=5))
    out["alpha_update"] = now - timedelta(minutes=7)
    await add_assignment(conn, out["dist"], "alpha", 0, status="training", updated_at=out["alpha_update"])
    await add_assignment(conn, out["dist"], "beta", 1, status="assigned", updated_at=now - timedelta(minutes=3))
    await add_assignment(conn, out["dist"], "alpha", 2, status="completed", updated_at=now)
    await add_assignment(conn, out["numeric"], "gamma", 0, status="training")
    await add_assignment(conn, out["numeric"], "beta", 1, status="completed")
    await metric_queries.record_metrics(conn, "alpha", [("gpu", 10.0), ("gpu", 30.0), ("ram", 512.0)])
    await metric_queries.record_metrics(conn, "beta", [("gpu", 7.5)])
    await conn.execute(
        insert(performance_metrics).values(client_id="alpha", metric_type="gpu", value=500.0, recorded_at=now - timedelta(hours=2))
    )
    return out


@mysql_only
async def test_seed_active_tasks_query_verbatim_agrees(db: Database) -> None:
    """The seed's active-tasks SQL runs as written and gives our rows, in our order."""
    async with db.begin() as conn:
        farm = await add_farm(conn)
    async with db.connect() as conn:
        seed = await run_seed(conn, seed_queries("Common Queries")["Get active tasks with client info"])
        ours = await task_queries.active_tasks_with_clients(conn)
    assert [row["id"] for row in seed] == [farm["single"], farm["dist"], farm["numeric"]]
    assert [(r["id"], r["client_status"], r["last_seen"]) for r in seed] == [
        (r["id"], r["client_status"], r["last_seen"]) for r in ours
    ]
    assert seed[2]["client_status"] == "inactive" and seed[0]["client_status"] is None


@mysql_only
async def test_seed_completion_statistics_verbatim_agrees(db: Database) -> None:
    """The seed's completion-statistics SQL gives the same totals and averages as ours."""
    async with db.begin() as conn:
        await add_farm(conn)
    async with db.connect() as conn:
        seed = await run_seed(conn, seed_queries("Common Queries")["Get task completion statistics"])
        ours = await task_queries.completion_statistics(conn)
    as_tuples = lambda rows: sorted(  # noqa: E731
        (r["type"], int(r["total"]), int(r["completed"]), int(r["failed"]), float(r["avg_completion_time"])) for r in rows
    )
    assert as_tuples(seed) == as_tuples(ours) == [("evaluation", 2, 1, 0, 121.0), ("training", 6, 2, 1, 120.0)]
    assert all(isinstance(row["avg_completion_time"], Decimal) for row in seed)  # MySQL AVG is DECIMAL; ours is float


@mysql_only
async def test_seed_active_clients_verbatim_agrees(db: Database) -> None:
    """The seed's active-clients SQL gives the same counts and last updates as ours."""
    async with db.begin() as conn:
        farm = await add_farm(conn)
    async with db.connect() as conn:
        seed = await run_seed(conn, seed_queries("Common Queries")["Get active clients with task counts"])
        ours = await client_queries.active_clients_with_task_counts(conn)
    summary = lambda rows: {r["id"]: (int(r["active_tasks"]), r["last_task_update"]) for r in rows}  # noqa: E731
    assert summary(seed) == summary(ours) == {
        "alpha": (1, farm["alpha_update"]),
        "beta": (1, farm["now"] - timedelta(minutes=3)),
        "delta": (0, None),
    }


@mysql_only
async def test_seed_client_performance_verbatim_agrees(db: Database) -> None:
    """The seed's last-hour performance SQL gives the same aggregates as ours."""
    async with db.begin() as conn:
        await add_farm(conn)
    async with db.connect() as conn:
        seed = await run_seed(conn, seed_queries("Common Queries")["Get client performance metrics"])
        ours = await metric_queries.client_performance(conn)
    as_tuples = lambda rows: sorted(  # noqa: E731
        (r["client_id"], r["metric_type"], float(r["avg_value"]), float(r["min_value"]), float(r["max_value"])) for r in rows
    )
    assert as_tuples(seed) == as_tuples(ours) == [
        ("alpha", "gpu", 20.0, 10.0, 30.0),
        ("alpha", "ram", 512.0, 512.0, 512.0),
        ("beta", "gpu", 7.5, 7.5, 7.5),
    ]


@mysql_only
async def test_seed_distributed_progress_verbatim_also_matches_numeric_one(db: Database) -> None:
    """On MariaDB the seed's `JSON_EXTRACT(...) = true` matches boolean true but also 1; ours only true.

    MariaDB's JSON_EXTRACT returns text ('true', '1'), and comparing it with TRUE (the integer 1)
    is true for the JSON boolean and also for the number 1 (and 1.0, and the string "1"). Our
    distributed_progress requires the JSON boolean true on both backends (SQLite's json_type),
    so a config with "distributed": 1 is not a distributed task there.
    """
    async with db.begin() as conn:
        farm = await add_farm(conn)
    async with db.connect() as conn:
        seed = await run_seed(conn, seed_queries("Common Queries")["Get distributed task progress"])
        ours = await assignment_queries.distributed_progress(conn)
    seed_by_id = {r["id"]: r for r in seed}
    assert set(seed_by_id) == {farm["dist"], farm["dist_fresh"], farm["numeric"]}
    assert [r["id"] for r in ours] == [farm["dist"], farm["dist_fresh"]]
    for row in ours:
        theirs = seed_by_id[row["id"]]
        assert (int(theirs["active_clients"]), int(theirs["completed_shards"]), int(theirs["required_clients"])) == (
            row["active_clients"],
            row["completed_shards"],
            row["required_clients"],
        )
    assert (ours[0]["active_clients"], ours[0]["completed_shards"], ours[0]["required_clients"]) == (2, 1, 3)
    assert seed_by_id[farm["dist"]]["required_clients"] == "3"  # text on MariaDB, hence our int()


@mysql_only
async def test_seed_distributed_condition_on_mariadb(db: Database) -> None:
    """Which JSON values MariaDB's `JSON_EXTRACT(config, '$.distributed') = true` accepts (documents the seed)."""
    values: dict[str, Any] = {
        "true": True, "false": False, "one": 1, "one_float": 1.0, "string_one": "1", "string_true": "true", "list": [True]
    }
    async with db.begin() as conn:
        by_name = {name: await add_task(conn, config={"distributed": value}) for name, value in values.items()}
        by_name["missing"] = await add_task(conn, config={"n_clients": 2})
    async with db.connect() as conn:
        matched = set(
            (await conn.exec_driver_sql("SELECT id FROM tasks t WHERE JSON_EXTRACT(t.config, '$.distributed') = true")).scalars()
        )
        ours = {row["id"] for row in await assignment_queries.distributed_progress(conn)}
    names = {task_id: name for name, task_id in by_name.items()}
    assert {names[task_id] for task_id in matched} == {"true", "one", "one_float", "string_one"}
    assert {names[task_id] for task_id in ours} == {"true"}


@mysql_only
async def test_seed_available_ranks_verbatim(db: Database) -> None:
    """The seed's ranks SQL (with `?` made a literal id; `rank` unquoted works on MariaDB) agrees up to rank 2.

    Its ranks come from a hard-coded `0 UNION 1 UNION 2`, so for n_clients above 3 it misses
    ranks 3 and up; available_ranks generates 0..n_clients-1 instead.
    """
    sql = seed_queries("Common Queries")["Get available ranks for task"]
    assert sql.count("?") == 1
    async with db.begin() as conn:
        for client_id in ("c1", "c2"):
            await add_client(conn, client_id)
        three = await add_task(conn, status="running", config={"distributed": True, "n_clients": 3})
        await add_assignment(conn, three, "c1", 1)
        two = await add_task(conn, config={"distributed": True, "n_clients": 2})
        seven = await add_task(conn, config={"distributed": True, "n_clients": 7})
        await add_assignment(conn, seven, "c1", 0)
        await add_assignment(conn, seven, "c2", 5)
    async with db.connect() as conn:
        seed = {
            task_id: [int(r["rank"]) for r in await run_seed(conn, sql.replace("?", str(task_id)))]
            for task_id in (three, two, seven)
        }
        ours = {task_id: await assignment_queries.available_ranks(conn, task_id) for task_id in (three, two, seven)}
        three_rows = await run_seed(conn, sql.replace("?", str(three)))
    assert [(r["id"], r["status"]) for r in three_rows] == [(three, "running"), (three, "running")]
    assert sorted(seed[three]) == ours[three] == [0, 2]
    assert sorted(seed[two]) == ours[two] == [0, 1]
    assert sorted(seed[seven]) == [1, 2]
    assert ours[seven] == [1, 2, 3, 4, 6]


@mysql_only
@pytest.mark.parametrize(
    ("name", "ours", "expected"),
    [
        ("Delete old completed tasks", maintenance.delete_old_tasks, 2),
        ("Remove inactive clients", maintenance.mark_inactive_clients, 1),
        ("Clean orphaned assignments", maintenance.delete_orphaned_assignments, 1),
    ],
)
async def test_seed_cleanup_verbatim_has_the_same_effect(db: Database, name: str, ours: Any, expected: int) -> None:
    """Each seed cleanup statement, run as written, leaves the same rows as our function (and dry_run counts them)."""
    async with db.begin() as conn:
        await add_cleanup_rows(conn)
    async with db.connect() as conn:
        before = await snapshot(conn)
        await run_seed(conn, seed_queries("Maintenance Queries")[name])
        after_seed = await snapshot(conn)
        await conn.rollback()
    assert after_seed != before
    assert await db_snapshot(db) == before
    async with db.begin() as conn:
        counted = await ours(conn, dry_run=True)
        changed = await ours(conn)
    assert counted == changed == expected
    assert await db_snapshot(db) == after_seed
