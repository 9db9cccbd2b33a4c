"""The database itself refuses bad data and keeps references straight, on SQLite and MariaDB."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Table, func, insert, select, text, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import Database, mysql_error_code
from app.db.schema import (
    SEED_TABLES,
    checkpoints,
    client_logs,
    clients,
    metadata,
    performance_metrics,
    task_assignments,
    task_logs,
    tasks,
)

OLD = "2020-01-02 03:04:05"

# Every JSON column of the seed: (table, column, nullable).
JSON_COLUMNS = [
    ("clients", "cpu_info", False),
    ("clients", "ram_info", False),
    ("clients", "gpu_info", True),
    ("clients", "session_info", True),
    ("tasks", "requirements", False),
    ("tasks", "config", True),
    ("tasks", "result", True),
    ("task_assignments", "metrics", True),
    ("checkpoints", "metrics", True),
    ("model_versions", "config", True),
]

INVALID_JSON = ["{not json", "", "{'single': 'quotes'}"]

# Every ENUM column of the seed: (table, column, an allowed value).
ENUM_COLUMNS = [
    ("clients", "status", "inactive"),
    ("tasks", "status", "running"),
    ("task_assignments", "status", "training"),
    ("checkpoints", "type", "emergency"),
    ("task_logs", "log_type", "warning"),
    ("client_logs", "log_type", "warning"),
]

# MySQL/MariaDB error numbers that mean "this is not valid JSON": MariaDB's failed CHECK
# (4025), MySQL 8's failed CHECK (3819) and MySQL 8's JSON type refusing the text (3140).
MYSQL_JSON_ERRORS = {4025, 3819, 3140}
MYSQL_DATA_TRUNCATED = 1265


# --- helpers ---------------------------------------------------------------------------------------


def utcnow() -> datetime:
    """Now in UTC, naive and to the second, as both backends store DATETIME."""
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


async def add_parents(db: Database) -> int:
    """A client 'parent' and a task it runs, for rows that reference them; returns the task id."""
    async with db.begin() as conn:
        await conn.execute(
            insert(clients).values(id="parent", cpu_info={}, ram_info={}, last_seen=utcnow(), status="active")
        )
        result = await conn.execute(
            insert(tasks).values(
                type="training", requirements={}, status="running", client_id="parent", created_at=utcnow(), updated_at=utcnow()
            )
        )
        return int(result.inserted_primary_key[0])


def valid_row(table: str, task_id: int, n: int) -> dict[str, Any]:
    """Raw column values (JSON as text) for a valid row of the table; n keeps unique keys unique."""
    rows: dict[str, dict[str, Any]] = {
        "clients": {
            "id": f"client-{n}",
            "cpu_info": '{"cores": 4}',
            "ram_info": '{"total_mb": 8192}',
            "gpu_info": "[]",
            "session_info": "{}",
            "last_seen": OLD,
            "status": "active",
        },
        "tasks": {
            "type": "training",
            "requirements": "{}",
            "status": "pending",
            "created_at": OLD,
            "updated_at": OLD,
            "config": '{"distributed": true}',
            "result": "null",
        },
        "task_assignments": {"task_id": task_id, "client_id": "parent", "status": "assigned", "rank": 100 + n, "metrics": "{}"},
        "checkpoints": {"task_id": task_id, "path": f"/ckpt/{n}", "type": "regular", "metrics": "{}", "created_at": OLD},
        "model_versions": {"name": "model", "version": f"v{n}", "url": "http://x/m", "config": "{}", "created_at": OLD},
        "task_logs": {"task_id": task_id, "client_id": "parent", "log_type": "info", "message": "m", "created_at": OLD},
        "client_logs": {"client_id": "parent", "log_type": "info", "message": "m", "created_at": OLD},
    }
    return rows[table]


async def raw_insert(db: Database, table: str, row: dict[str, Any]) -> None:
    """INSERT the values as given, through text() so no Python type processing touches them."""
    async with db.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in row)
        values = ", ".join(f":{name}" for name in row)
        await conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({values})"), row)


async def count(db: Database, table: str) -> int:
    """How many rows the table has."""
    async with db.connect() as conn:
        return int((await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())


async def raw_values(db: Database, table: str, column: str) -> list[Any]:
    """The column's stored values (as text, unprocessed), in id order."""
    async with db.connect() as conn:
        quoted = conn.dialect.identifier_preparer.quote(column)
        return list((await conn.execute(text(f"SELECT {quoted} FROM {table} ORDER BY id"))).scalars())


def assert_json_refused(db: Database, exc: DBAPIError) -> None:
    """The error is the database's refusal of invalid JSON, not some other failure."""
    if db.dialect == "sqlite":
        assert isinstance(exc, IntegrityError), exc
        assert "CHECK constraint failed" in str(exc.orig)
    else:
        assert mysql_error_code(exc) in MYSQL_JSON_ERRORS, exc


def assert_enum_refused(db: Database, exc: DBAPIError) -> None:
    """The error is the database's refusal of a value outside the ENUM."""
    if db.dialect == "sqlite":
        assert isinstance(exc, IntegrityError), exc
        assert "CHECK constraint failed" in str(exc.orig)
    else:
        assert isinstance(exc, DataError), exc  # strict mode: error 1265, not a warning and ''
        assert mysql_error_code(exc) == MYSQL_DATA_TRUNCATED


async def rows_of(conn: AsyncConnection, table: Table, *columns: str) -> set[tuple[Any, ...]]:
    """The given columns of every row of the table."""
    return {tuple(row) for row in await conn.execute(select(*(table.c[name] for name in columns)))}


# --- JSON columns ----------------------------------------------------------------------------------


def test_json_column_list_is_every_json_column_of_the_schema() -> None:
    """JSON_COLUMNS names every JSON column of the seed tables, with its nullability (so none goes untested)."""
    in_schema = [
        (table.name, column.name, bool(column.nullable))
        for table in metadata.sorted_tables
        if table.name in SEED_TABLES
        for column in table.columns
        if isinstance(column.type, JSON)
    ]
    assert sorted(in_schema) == sorted(JSON_COLUMNS)


@pytest.mark.parametrize(("table", "column", "nullable"), JSON_COLUMNS, ids=[f"{t}.{c}" for t, c, _ in JSON_COLUMNS])
async def test_invalid_json_is_refused_on_insert(db: Database, table: str, column: str, nullable: bool) -> None:
    """A raw INSERT of invalid JSON text fails with a DBAPI error and writes nothing; valid JSON is accepted."""
    task_id = await add_parents(db)
    await raw_insert(db, table, valid_row(table, task_id, 0))  # the same statement with valid JSON works
    before = await count(db, table)
    for n, bad in enumerate(INVALID_JSON, start=1):
        with pytest.raises(DBAPIError) as info:
            await raw_insert(db, table, {**valid_row(table, task_id, n), column: bad})
        assert_json_refused(db, info.value)
    assert await count(db, table) == before


@pytest.mark.parametrize(("table", "column", "nullable"), JSON_COLUMNS, ids=[f"{t}.{c}" for t, c, _ in JSON_COLUMNS])
async def test_invalid_json_is_refused_on_update(db: Database, table: str, column: str, nullable: bool) -> None:
    """A raw UPDATE to invalid JSON text fails and leaves the stored value as it was."""
    task_id = await add_parents(db)
    await raw_insert(db, table, valid_row(table, task_id, 0))
    stored = await raw_values(db, table, column)
    for bad in INVALID_JSON:
        with pytest.raises(DBAPIError) as info:
            async with db.begin() as conn:
                quoted = conn.dialect.identifier_preparer.quote(column)
                await conn.execute(text(f"UPDATE {table} SET {quoted} = :bad"), {"bad": bad})
        assert_json_refused(db, info.value)
    assert await raw_values(db, table, column) == stored


@pytest.mark.parametrize(("table", "column", "nullable"), JSON_COLUMNS, ids=[f"{t}.{c}" for t, c, _ in JSON_COLUMNS])
async def test_null_json_is_accepted_only_where_nullable(db: Database, table: str, column: str, nullable: bool) -> None:
    """SQL NULL passes the JSON check in a nullable column; a NOT NULL one refuses it (IntegrityError)."""
    task_id = await add_parents(db)
    before = await raw_values(db, table, column)
    if nullable:
        await raw_insert(db, table, {**valid_row(table, task_id, 1), column: None})
        assert Counter(await raw_values(db, table, column)) == Counter([*before, None])
    else:
        with pytest.raises(IntegrityError):
            await raw_insert(db, table, {**valid_row(table, task_id, 1), column: None})
        assert await raw_values(db, table, column) == before


async def test_json_written_by_sqlalchemy_reads_back(db: Database) -> None:
    """Valid JSON written through the JSON type round-trips, and Python None is SQL NULL (none_as_null)."""
    await add_parents(db)
    gpus = [{"name": "RTX 3060", "memory_mb": 12288}]
    async with db.begin() as conn:
        await conn.execute(
            insert(clients).values(
                id="json", cpu_info={"cores": 8, "model": "Ryzen"}, ram_info={"total_mb": 32768},
                gpu_info=gpus, session_info=None, last_seen=utcnow(), status="active",
            )
        )
    async with db.connect() as conn:
        row = (await conn.execute(select(clients).where(clients.c.id == "json"))).one()
        raw = (await conn.execute(text("SELECT session_info FROM clients WHERE id = 'json'"))).scalar_one()
    assert (row.cpu_info, row.gpu_info, row.session_info) == ({"cores": 8, "model": "Ryzen"}, gpus, None)
    assert raw is None


# --- unique ranks, ENUMs, foreign keys ---------------------------------------------------------------


async def test_duplicate_rank_in_a_task_is_refused(db: Database) -> None:
    """(task_id, rank) is unique: a second rank 0 for a task fails, rank 0 of another task does not."""
    task_id = await add_parents(db)
    async with db.begin() as conn:
        await conn.execute(insert(clients).values(id="other", cpu_info={}, ram_info={}, last_seen=utcnow(), status="active"))
        other_task = (
            await conn.execute(
                insert(tasks).values(type="t", requirements={}, status="pending", created_at=utcnow(), updated_at=utcnow())
            )
        ).inserted_primary_key[0]
        for task, client, rank in ((task_id, "parent", 0), (other_task, "parent", 0), (task_id, "other", 1)):
            await conn.execute(insert(task_assignments).values(task_id=task, client_id=client, rank=rank, status="assigned"))
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(insert(task_assignments).values(task_id=task_id, client_id="other", rank=0, status="training"))
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(
                update(task_assignments)
                .where(task_assignments.c.task_id == task_id, task_assignments.c.rank == 1)
                .values(rank=0)
            )
    async with db.connect() as conn:
        assert await rows_of(conn, task_assignments, "task_id", "rank", "client_id") == {
            (task_id, 0, "parent"),
            (other_task, 0, "parent"),
            (task_id, 1, "other"),
        }


@pytest.mark.parametrize(("table", "column", "good"), ENUM_COLUMNS, ids=[f"{t}.{c}" for t, c, _ in ENUM_COLUMNS])
async def test_invalid_enum_value_is_refused(db: Database, table: str, column: str, good: str) -> None:
    """A raw INSERT of a value outside the ENUM (or empty) fails and writes nothing; an allowed one works."""
    task_id = await add_parents(db)
    before = await raw_values(db, table, column)
    await raw_insert(db, table, {**valid_row(table, task_id, 0), column: good})
    for n, bad in enumerate(("bogus", "", "runnin"), start=1):
        with pytest.raises(DBAPIError) as info:
            await raw_insert(db, table, {**valid_row(table, task_id, n), column: bad})
        assert_enum_refused(db, info.value)
    assert Counter(await raw_values(db, table, column)) == Counter([*before, good])


async def test_invalid_enum_value_is_refused_on_update(db: Database) -> None:
    """A raw UPDATE of tasks.status to an unknown value fails and the status stays."""
    task_id = await add_parents(db)
    with pytest.raises(DBAPIError) as info:
        async with db.begin() as conn:
            await conn.execute(text("UPDATE tasks SET status = 'paused' WHERE id = :id"), {"id": task_id})
    assert_enum_refused(db, info.value)
    assert await raw_values(db, "tasks", "status") == ["running"]


async def test_enum_spellings_mariadb_accepts_and_sqlite_refuses(db: Database) -> None:
    """MariaDB's ENUM folds case, drops trailing spaces and takes 1-based indexes; SQLite's CHECK takes none of them.

    The product writes ENUMs through SQLAlchemy's Enum (validate_strings=True), which refuses
    these in Python before either database sees them; this pins down what raw SQL gets.
    """
    task_id = await add_parents(db)
    spellings = {"RUNNING": "running", "completed ": "completed", "1": "pending", "2": "running"}
    for n, (spelling, meaning) in enumerate(spellings.items(), start=1):
        row = {**valid_row("tasks", task_id, n), "status": spelling}
        if db.dialect == "sqlite":
            with pytest.raises(IntegrityError):
                await raw_insert(db, "tasks", row)
        else:
            await raw_insert(db, "tasks", row)
            assert (await raw_values(db, "tasks", "status"))[-1] == meaning
    assert await count(db, "tasks") == (1 if db.dialect == "sqlite" else 1 + len(spellings))


async def test_references_to_missing_rows_are_refused(db: Database) -> None:
    """Foreign keys are enforced: an assignment or task naming a missing task/client fails."""
    task_id = await add_parents(db)
    bad_rows = [
        ("task_assignments", {**valid_row("task_assignments", task_id, 1), "task_id": task_id + 1000}),
        ("task_assignments", {**valid_row("task_assignments", task_id, 2), "client_id": "nobody"}),
        ("tasks", {**valid_row("tasks", task_id, 3), "client_id": "nobody"}),
        ("checkpoints", {**valid_row("checkpoints", task_id, 4), "task_id": task_id + 1000}),
        ("client_logs", {**valid_row("client_logs", task_id, 5), "client_id": "nobody"}),
    ]
    for table, row in bad_rows:
        before = await count(db, table)
        with pytest.raises(IntegrityError):
            await raw_insert(db, table, row)
        assert await count(db, table) == before, table


# --- cascades ----------------------------------------------------------------------------------------


async def add_dependents(conn: AsyncConnection, task_id: int, client_id: str, rank: int) -> None:
    """One assignment, checkpoint, task log, client log and performance metric linking the task and client."""
    now = utcnow()
    await conn.execute(insert(task_assignments).values(task_id=task_id, client_id=client_id, rank=rank, status="training"))
    await conn.execute(
        insert(checkpoints).values(
            task_id=task_id, client_id=client_id, path=f"/c/{task_id}/{client_id}", type="regular", created_at=now
        )
    )
    await conn.execute(insert(task_logs).values(task_id=task_id, client_id=client_id, log_type="info", message="m", created_at=now))
    await conn.execute(insert(client_logs).values(client_id=client_id, log_type="info", message="m", created_at=now))
    await conn.execute(
        insert(performance_metrics).values(client_id=client_id, task_id=task_id, metric_type="gpu", value=1.0, recorded_at=now)
    )


async def add_two_tasks_two_clients(db: Database) -> tuple[int, int]:
    """Clients c1, c2 and tasks t1 (run by c1), t2 (run by c2), each client working on each task."""
    async with db.begin() as conn:
        for client_id in ("c1", "c2"):
            await conn.execute(insert(clients).values(id=client_id, cpu_info={}, ram_info={}, last_seen=utcnow(), status="active"))
        ids = []
        for client_id in ("c1", "c2"):
            result = await conn.execute(
                insert(tasks).values(
                    type="t", requirements={}, status="running", client_id=client_id, created_at=utcnow(), updated_at=utcnow()
                )
            )
            ids.append(int(result.inserted_primary_key[0]))
        t1, t2 = ids
        for task_id in (t1, t2):
            for rank, client_id in enumerate(("c1", "c2")):
                await add_dependents(conn, task_id, client_id, rank)
    return t1, t2


async def test_deleting_a_task_cascades_to_its_rows(db: Database) -> None:
    """Deleting a task deletes its assignments, checkpoints, task logs and performance metrics, and nothing else."""
    t1, t2 = await add_two_tasks_two_clients(db)
    async with db.begin() as conn:
        assert (await conn.execute(tasks.delete().where(tasks.c.id == t1))).rowcount == 1
    async with db.connect() as conn:
        for table in (task_assignments, checkpoints, task_logs, performance_metrics):
            assert await rows_of(conn, table, "task_id", "client_id") == {(t2, "c1"), (t2, "c2")}, table.name
        assert await rows_of(conn, client_logs, "client_id") == {("c1",), ("c2",)}
        assert await rows_of(conn, clients, "id") == {("c1",), ("c2",)}
        assert await rows_of(conn, tasks, "id") == {(t2,)}


async def test_deleting_a_client_nulls_its_tasks_and_checkpoints_and_cascades_the_rest(db: Database) -> None:
    """Deleting a client sets tasks/checkpoints.client_id NULL and deletes its assignments, logs and metrics."""
    t1, t2 = await add_two_tasks_two_clients(db)
    async with db.begin() as conn:
        assert (await conn.execute(clients.delete().where(clients.c.id == "c1"))).rowcount == 1
    async with db.connect() as conn:
        assert await rows_of(conn, tasks, "id", "client_id") == {(t1, None), (t2, "c2")}
        assert await rows_of(conn, checkpoints, "task_id", "client_id") == {(t1, None), (t1, "c2"), (t2, None), (t2, "c2")}
        for table in (task_assignments, task_logs, performance_metrics):
            assert await rows_of(conn, table, "task_id", "client_id") == {(t1, "c2"), (t2, "c2")}, table.name
        assert await rows_of(conn, client_logs, "client_id") == {("c2",)}


# --- defaults ------------------------------------------------------------------------------------------


async def test_assignment_updated_at_moves_on_update(db: Database) -> None:
    """task_assignments.updated_at keeps an explicit value, then becomes now when another column changes."""
    task_id = await add_parents(db)
    old = datetime.fromisoformat(OLD)
    async with db.begin() as conn:
        await conn.execute(insert(task_assignments).values(task_id=task_id, client_id="parent", rank=0, status="assigned"))
        await conn.execute(insert(task_assignments).values(task_id=task_id, client_id="parent", rank=1, status="assigned"))
        await conn.execute(update(task_assignments).values(assigned_at=old, updated_at=old))
    async with db.connect() as conn:
        assert await rows_of(conn, task_assignments, "updated_at") == {(old,)}  # an explicit value wins
    async with db.begin() as conn:
        await conn.execute(update(task_assignments).where(task_assignments.c.rank == 0).values(status="training"))
    async with db.connect() as conn:
        rows = {row.rank: row for row in await conn.execute(select(task_assignments))}
    assert abs(rows[0].updated_at - utcnow()) < timedelta(seconds=30)  # UTC now, on both backends
    assert rows[0].assigned_at == old  # only updated_at is ON UPDATE
    assert (rows[1].updated_at, rows[1].status) == (old, "assigned")  # rows the UPDATE did not touch keep theirs


async def test_assignment_times_default_to_now(db: Database) -> None:
    """An INSERT without assigned_at/updated_at gets CURRENT_TIMESTAMP (UTC) for both."""
    task_id = await add_parents(db)
    await raw_insert(db, "task_assignments", {"task_id": task_id, "client_id": "parent", "rank": 0, "status": "assigned"})
    async with db.connect() as conn:
        row = (await conn.execute(select(task_assignments))).one()
    assert abs(row.assigned_at - utcnow()) < timedelta(seconds=30)
    assert abs(row.updated_at - utcnow()) < timedelta(seconds=30)


async def test_priority_defaults_to_zero(db: Database) -> None:
    """A raw INSERT that omits priority stores 0; an explicit NULL is allowed (the seed's column is nullable)."""
    await add_parents(db)
    row = valid_row("tasks", 0, 0)
    assert "priority" not in row
    await raw_insert(db, "tasks", row)
    await raw_insert(db, "tasks", {**row, "priority": None})
    await raw_insert(db, "tasks", {**row, "priority": -3})
    async with db.connect() as conn:
        priorities = list(
            (await conn.execute(select(tasks.c.priority).where(tasks.c.client_id.is_(None)).order_by(tasks.c.id))).scalars()
        )
        total = (await conn.execute(select(func.count()).select_from(tasks))).scalar_one()
    assert priorities == [0, None, -3]
    assert total == 4
