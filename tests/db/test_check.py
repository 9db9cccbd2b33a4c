"""`db check`: a migrated database and the seed's own DDL match the seed; every kind of tampering is named."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import CheckConstraint, Column, DefaultClause, Enum, Index, Integer, MetaData, String, Table, Text, text
from sqlalchemy.engine import make_url

from app.db.check import check_schema
from app.db.engine import Database, create_database
from app.db.introspect import read_live_schema
from app.db.migrate import upgrade
from app.db.schema import is_addition, metadata
from app.db.specs import enum_check as _enum_check
from app.db.specs import json_checked_column as _json_checked_column
from app.db.specs import normalize_default as _normalize_default
from app.db.specs import normalize_rule as _normalize_rule
from app.db.specs import normalize_type as _mysql_type

SEED_DOCUMENT = Path(__file__).resolve().parents[1] / "data" / "ai-farm-schema.md"
SEED_TABLES = {
    "clients",
    "tasks",
    "task_assignments",
    "checkpoints",
    "model_versions",
    "task_logs",
    "client_logs",
    "performance_metrics",
}

# client_logs as the migration creates it on SQLite, with the parts a test changes left open.
CLIENT_LOGS_SQLITE = """
CREATE TABLE client_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id VARCHAR(255) REFERENCES clients (id) ON DELETE {on_delete},
    log_type VARCHAR(7) NOT NULL CHECK (log_type IN ('info', 'warning', 'error')),
    message {message},
    created_at DATETIME NOT NULL
)"""


@pytest.fixture
async def mysql_db(mysql_url: str) -> AsyncIterator[Database]:
    """A MariaDB database at the current revision."""
    database = create_database(mysql_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    """An SQLite database at the current revision."""
    database = create_database(sqlite_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


async def _ddl(db: Database, *statements: str) -> None:
    async with db.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


def _index(db: Database, table: str, name: str) -> str:
    """The physical name of a seed index: SQLite's are prefixed by their table."""
    return name if db.dialect == "mysql" else f"{table}_{name}"


async def _fk_name(db: Database, table: str, column: str) -> str:
    async with db.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT CONSTRAINT_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = :t AND COLUMN_NAME = :c AND REFERENCED_TABLE_NAME IS NOT NULL"
            ),
            {"t": table, "c": column},
        )
        return result.scalar_one()


async def _rebuild_client_logs_sqlite(db: Database, *, on_delete: str = "CASCADE", message: str = "TEXT NOT NULL") -> None:
    await _ddl(
        db,
        "DROP TABLE client_logs",
        CLIENT_LOGS_SQLITE.format(on_delete=on_delete, message=message),
        "CREATE INDEX client_logs_idx_client_time ON client_logs (client_id, created_at)",
    )


def _seed_ddl(database: str) -> tuple[str, list[str]]:
    """The seed's CREATE DATABASE (renamed) and CREATE TABLEs as written, `clients` first (the others reference it;
    MariaDB accepts the seed's unquoted `rank`, MySQL 8 would not)."""
    blocks = "\n".join(re.findall(r"```sql\n(.*?)```", SEED_DOCUMENT.read_text(), re.DOTALL))
    create_database_sql = re.search(r"CREATE DATABASE\s+\w+(.*?);", blocks, re.DOTALL)
    assert create_database_sql is not None
    tables = re.findall(r"CREATE TABLE\s+\w+\s*\(.*?;", blocks, re.DOTALL)
    tables.sort(key=lambda sql: not sql.startswith("CREATE TABLE clients "))
    return f"CREATE DATABASE `{database}`{create_database_sql.group(1)}", tables


def _copy_of_schema() -> MetaData:
    """A copy of app/db/schema.py's metadata that a test may change."""
    copy = MetaData()
    for table in metadata.tables.values():
        copied = table.to_metadata(copy)
        info = {index.name: index.info for index in table.indexes}
        for index in copied.indexes:  # to_metadata() does not copy an index's info (which marks additions)
            index.info.update(info[index.name])
    return copy


def _addition_tables() -> list[str]:
    return sorted(name for name, table in metadata.tables.items() if is_addition(table))


def _addition_indexes() -> set[str]:
    return {str(index.name) for table in metadata.tables.values() for index in table.indexes if is_addition(index)}


def _has(lines: list[str], *words: str) -> bool:
    return any(all(word in line for word in words) for line in lines)


# --- a correct schema --------------------------------------------------------------------------------


def test_expected_schema_covers_the_eight_seed_tables() -> None:
    assert {name for name, table in metadata.tables.items() if not is_addition(table)} == SEED_TABLES


async def test_upgraded_database_matches_the_seed(db: Database) -> None:
    report = await check_schema(db)
    assert report.differences == []
    tables = [line for line in report.additions if line.startswith("table ")]
    assert tables == [f"table {name}" for name in _addition_tables()]
    indexes = {line.split()[1].split(".")[1].removeprefix("tasks_").removeprefix("task_assignments_")
               for line in report.additions if line.startswith("index ")}
    assert indexes == _addition_indexes()


@pytest.mark.mysql
async def test_seed_document_ddl_run_verbatim_matches(mysql_url: str) -> None:
    url = make_url(mysql_url)
    assert url.database
    create_db, create_tables = _seed_ddl(url.database)
    assert len(create_tables) == 8
    assert {re.match(r"CREATE TABLE\s+(\w+)", sql).group(1) for sql in create_tables} == SEED_TABLES  # type: ignore[union-attr]
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password or "")
    try:
        with conn.cursor() as cursor:
            cursor.execute(create_db)
            conn.select_db(url.database)
            for sql in create_tables:
                cursor.execute(sql)
    finally:
        conn.close()
    database = create_database(mysql_url)
    try:
        report = await check_schema(database)
        changed = _copy_of_schema()
        changed.tables["clients"].c.version.type = String(40)
        changed.tables["clients"].c.hostname.nullable = False
        changed_report = await check_schema(database, changed)
    finally:
        await database.dispose()
    assert report.differences == []
    assert report.additions == []
    assert changed_report.differences == [
        "table clients: column version type: expected varchar(40), actual varchar(50)",
        "table clients: column hostname nullability: expected NOT NULL, actual NULL",
    ]


# --- tampering on both backends ------------------------------------------------------------------------


async def test_dropped_index_is_named(db: Database) -> None:
    statement = "DROP INDEX idx_priority ON tasks" if db.dialect == "mysql" else "DROP INDEX tasks_idx_priority"
    await _ddl(db, statement)
    report = await check_schema(db)
    assert report.differences == ["table tasks: index idx_priority missing (expected INDEX idx_priority (priority))"]


async def test_unique_key_turned_plain_index_is_named(db: Database) -> None:
    name = _index(db, "task_assignments", "unique_assignment")
    if db.dialect == "mysql":
        statements = [f"ALTER TABLE task_assignments DROP INDEX {name}, ADD INDEX {name} (task_id, `rank`)"]
    else:
        statements = [f"DROP INDEX {name}", f'CREATE INDEX {name} ON task_assignments (task_id, "rank")']
    await _ddl(db, *statements)
    report = await check_schema(db)
    assert report.differences == [
        "table task_assignments: index unique_assignment: expected UNIQUE KEY unique_assignment (task_id, rank), "
        f"actual INDEX {name} (task_id, rank)"
    ]


async def test_dropped_column_is_named(db: Database) -> None:
    await _ddl(db, "ALTER TABLE clients DROP COLUMN hostname")
    report = await check_schema(db)
    assert report.differences == ["table clients: column hostname missing (expected varchar(255) NULL)"]


async def test_extra_column_is_named(db: Database) -> None:
    await _ddl(db, "ALTER TABLE clients ADD COLUMN nickname VARCHAR(20)")
    report = await check_schema(db)
    assert report.differences == ["table clients: unexpected column nickname (varchar(20) NULL)"]


async def test_dropped_table_is_named(db: Database) -> None:
    await _ddl(db, "DROP TABLE performance_metrics")
    report = await check_schema(db)
    assert report.differences == ["table performance_metrics: missing (expected by the seed schema)"]


async def test_lost_on_update_current_timestamp_is_named(db: Database) -> None:
    if db.dialect == "mysql":
        statement = "ALTER TABLE task_assignments MODIFY updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP"
    else:
        statement = "DROP TRIGGER task_assignments_on_update_updated_at"
    await _ddl(db, statement)
    report = await check_schema(db)
    assert report.differences == [
        "table task_assignments: column updated_at ON UPDATE CURRENT_TIMESTAMP: expected yes, actual no"
    ]


async def test_extra_index_is_a_difference_and_alembic_version_is_not(db: Database) -> None:
    await _ddl(db, f"CREATE INDEX {_index(db, 'tasks', 'idx_extra')} ON tasks (type)")
    report = await check_schema(db)
    assert len(report.differences) == 1
    assert _has(report.differences, "tasks", "unexpected index", "idx_extra", "(type)")
    assert not _has(report.differences, "alembic_version")


async def test_unknown_tables_are_not_differences(db: Database) -> None:
    await _ddl(db, "CREATE TABLE scratch (id INT PRIMARY KEY, note TEXT)")
    report = await check_schema(db)
    assert report.differences == []
    assert not any("scratch" in line for line in report.additions)


async def test_documented_additions_are_listed_not_reported(db: Database) -> None:
    schema = _copy_of_schema()
    Table(
        "node_stats",
        schema,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("note", Text),
        info={"addition": True},
    )
    Index("idx_type", schema.tables["tasks"].c.type, info={"addition": True})
    await _ddl(
        db,
        "CREATE TABLE node_stats (id INT PRIMARY KEY, note TEXT)",
        f"CREATE INDEX {_index(db, 'tasks', 'idx_type')} ON tasks (type)",
    )
    report = await check_schema(db, schema)
    assert report.differences == []
    assert "table node_stats" in report.additions
    assert f"index tasks.{_index(db, 'tasks', 'idx_type')} (type)" in report.additions


# --- a change to schema.py is a difference, on both backends ---------------------------------------------


def _set_default(schema: MetaData) -> None:
    schema.tables["tasks"].c.priority.server_default = DefaultClause(text("5"))


def _drop_on_update(schema: MetaData) -> None:
    schema.tables["task_assignments"].c.updated_at.server_onupdate = None


def _cascade_tasks_client(schema: MetaData) -> None:
    (fk,) = schema.tables["tasks"].foreign_key_constraints
    fk.ondelete = "CASCADE"


def _add_index(schema: MetaData) -> None:
    Index("idx_extra", schema.tables["tasks"].c.type)


def _drop_json_check(schema: MetaData) -> None:
    table = schema.tables["tasks"]
    (check,) = [c for c in table.constraints if isinstance(c, CheckConstraint) and "config" in str(c.sqltext)]
    table.constraints.discard(check)


def _widen_enum(schema: MetaData) -> None:
    schema.tables["clients"].c.status.type = Enum("active", "inactive", "gone")


def _plain_unique_index(schema: MetaData) -> None:
    (index,) = [i for i in schema.tables["task_assignments"].indexes if i.name == "unique_assignment"]
    index.unique = False


def _drop_addition_default(schema: MetaData) -> None:
    schema.tables["task_runs"].c.failures.server_default = None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set_default, ("table tasks: column priority default: expected 5, actual 0",)),
        (_drop_on_update, ("table task_assignments: column updated_at ON UPDATE CURRENT_TIMESTAMP: expected no, actual yes",)),
        (_cascade_tasks_client, ("table tasks: foreign key (client_id)", "expected (client_id) -> clients(id) ON DELETE CASCADE",
                                 "actual (client_id) -> clients(id) ON DELETE SET NULL")),
        (_add_index, ("table tasks: index idx_extra missing (expected INDEX idx_extra (type))",)),
        (_drop_json_check, ("table tasks: unexpected CHECK (JSON_VALID(config))",)),
        (_widen_enum, ("table clients: column status type: expected enum('active','inactive','gone'), "
                       "actual enum('active','inactive')",)),
        (_plain_unique_index, ("table task_assignments: index unique_assignment: expected INDEX unique_assignment "
                               "(task_id, rank), actual UNIQUE KEY", "unique_assignment (task_id, rank)")),
        (_drop_addition_default, ("table task_runs: column failures default: expected none, actual 0",)),
    ],
    ids=["default", "on_update", "on_delete", "index", "check", "enum", "unique", "addition"],
)
async def test_a_changed_schema_module_is_a_difference(db: Database, change: Any, expected: tuple[str, ...]) -> None:
    schema = _copy_of_schema()
    change(schema)
    report = await check_schema(db, schema)
    assert len(report.differences) == 1, report.differences
    assert _has(report.differences, *expected), report.differences


# --- MariaDB-only tampering ----------------------------------------------------------------------------


@pytest.mark.mysql
@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "ALTER TABLE clients MODIFY version VARCHAR(40)",
            "table clients: column version type: expected varchar(50), actual varchar(40)",
        ),
        (
            "ALTER TABLE clients MODIFY hostname VARCHAR(255) NOT NULL",
            "table clients: column hostname nullability: expected NULL, actual NOT NULL",
        ),
        (
            "ALTER TABLE tasks ALTER priority SET DEFAULT 5",
            "table tasks: column priority default: expected 0, actual 5",
        ),
        (
            "ALTER TABLE clients MODIFY status ENUM('active', 'inactive', 'gone') NOT NULL",
            "table clients: column status type: expected enum('active','inactive'), actual enum('active','inactive','gone')",
        ),
        (
            "ALTER TABLE model_versions MODIFY id INT NOT NULL",
            "table model_versions: column id auto_increment: expected yes, actual no",
        ),
        (
            "ALTER TABLE model_versions DEFAULT CHARACTER SET latin1",
            "table model_versions: collation: expected a utf8mb4 collation, actual latin1_swedish_ci",
        ),
        (
            "ALTER TABLE model_versions ENGINE=Aria",
            "table model_versions: engine: expected InnoDB, actual Aria",
        ),
    ],
    ids=["type", "nullability", "default", "enum", "auto_increment", "collation", "engine"],
)
async def test_mysql_column_and_table_changes_are_named(mysql_db: Database, statement: str, expected: str) -> None:
    await _ddl(mysql_db, statement)
    report = await check_schema(mysql_db)
    assert report.differences == [expected]


@pytest.mark.mysql
async def test_mysql_changed_on_delete_rule_is_named(mysql_db: Database) -> None:
    name = await _fk_name(mysql_db, "tasks", "client_id")
    await _ddl(
        mysql_db,
        f"ALTER TABLE tasks DROP FOREIGN KEY {name}",
        "ALTER TABLE tasks ADD FOREIGN KEY (client_id) REFERENCES clients (id) ON DELETE CASCADE",
    )
    report = await check_schema(mysql_db)
    assert len(report.differences) == 1
    assert _has(report.differences, "table tasks", "foreign key (client_id)", "ON DELETE SET NULL", "ON DELETE CASCADE")


@pytest.mark.mysql
async def test_mysql_dropped_foreign_key_is_named(mysql_db: Database) -> None:
    name = await _fk_name(mysql_db, "checkpoints", "client_id")
    await _ddl(mysql_db, f"ALTER TABLE checkpoints DROP FOREIGN KEY {name}")
    report = await check_schema(mysql_db)
    assert report.differences == [
        "table checkpoints: foreign key (client_id) missing (expected (client_id) -> clients(id) ON DELETE SET NULL)"
    ]


@pytest.mark.mysql
async def test_mysql_dropped_json_check_is_named(mysql_db: Database) -> None:
    # The seed's table CHECK, not the column check MariaDB adds to every JSON column.
    async with mysql_db.connect() as conn:
        name = (
            await conn.execute(
                text(
                    "SELECT CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() "
                    "AND TABLE_NAME = 'tasks' AND LEVEL = 'Table' AND CHECK_CLAUSE LIKE '%config%'"
                )
            )
        ).scalar_one()
    await _ddl(mysql_db, f"ALTER TABLE tasks DROP CONSTRAINT {name}")
    report = await check_schema(mysql_db)
    assert report.differences == ["table tasks: CHECK (JSON_VALID(config)) missing"]


@pytest.mark.mysql
async def test_mysql_extra_check_is_named(mysql_db: Database) -> None:
    await _ddl(mysql_db, "ALTER TABLE tasks ADD CONSTRAINT positive_priority CHECK (priority >= 0)")
    report = await check_schema(mysql_db)
    assert len(report.differences) == 1
    assert _has(report.differences, "table tasks", "unexpected CHECK", "priority")


@pytest.mark.mysql
async def test_mysql_explicit_index_on_a_foreign_key_column_is_a_difference(mysql_db: Database) -> None:
    await _ddl(mysql_db, "CREATE INDEX by_client ON tasks (client_id)")
    report = await check_schema(mysql_db)
    assert report.differences == ["table tasks: unexpected index by_client: INDEX by_client (client_id)"]


# --- SQLite-only tampering -----------------------------------------------------------------------------


async def test_sqlite_rebuilt_table_as_migrated_matches(sqlite_db: Database) -> None:
    await _rebuild_client_logs_sqlite(sqlite_db)
    assert (await check_schema(sqlite_db)).differences == []


async def test_sqlite_changed_on_delete_rule_is_named(sqlite_db: Database) -> None:
    await _rebuild_client_logs_sqlite(sqlite_db, on_delete="SET NULL")
    report = await check_schema(sqlite_db)
    assert len(report.differences) == 1
    assert _has(report.differences, "table client_logs", "foreign key (client_id)", "ON DELETE CASCADE", "ON DELETE SET NULL")


async def test_sqlite_changed_column_type_and_nullability_are_named(sqlite_db: Database) -> None:
    await _rebuild_client_logs_sqlite(sqlite_db, message="VARCHAR(100)")
    report = await check_schema(sqlite_db)
    assert report.differences == [
        "table client_logs: column message type: expected text, actual varchar(100)",
        "table client_logs: column message nullability: expected NOT NULL, actual NULL",
    ]


async def test_sqlite_index_on_the_wrong_columns_is_named(sqlite_db: Database) -> None:
    await _ddl(
        sqlite_db,
        "DROP INDEX checkpoints_idx_task_type",
        "CREATE INDEX checkpoints_idx_task_type ON checkpoints (type, task_id)",
    )
    report = await check_schema(sqlite_db)
    assert report.differences == [
        "table checkpoints: index idx_task_type: expected INDEX idx_task_type (task_id, type), "
        "actual INDEX checkpoints_idx_task_type (type, task_id)"
    ]


# --- normalization of the spellings each server uses -------------------------------------------------


def test_defaults_normalize_across_servers() -> None:
    assert _normalize_default(None) is None
    assert _normalize_default("NULL") is None  # MariaDB: nullable column without a default
    assert _normalize_default("current_timestamp()") == "CURRENT_TIMESTAMP"  # MariaDB
    assert _normalize_default("CURRENT_TIMESTAMP") == "CURRENT_TIMESTAMP"  # MySQL 8, SQLite
    assert _normalize_default("'abc'") == "abc"  # MariaDB quotes string literals
    assert _normalize_default("0") == "0"


def test_types_and_rules_normalize_across_servers() -> None:
    assert _mysql_type("int(11)") == "int"
    assert _mysql_type("int") == "int"
    assert _mysql_type("int unsigned") == "int unsigned"
    assert _mysql_type("varchar(255)") == "varchar(255)"
    assert _normalize_rule("RESTRICT") == _normalize_rule("NO ACTION") == "NO ACTION"
    assert _normalize_rule("set null") == "SET NULL"


def test_check_clauses_are_recognized() -> None:
    assert _json_checked_column("json_valid(`metrics`)") == "metrics"  # MariaDB, MySQL 8
    assert _json_checked_column("(JSON_VALID( config ))") == "config"
    assert _json_checked_column("config IS NULL OR json_valid(config)") == "config"  # SQLite, nullable
    assert _json_checked_column("a IS NULL OR json_valid(b)") is None
    assert _json_checked_column("priority >= 0") is None
    assert _enum_check("status IN ('active', 'inactive')") == ("status", "enum('active','inactive')")
    assert _enum_check('"status" in (\'a\')') == ("status", "enum('a')")
    assert _enum_check("status IN (1, 2)") is None


async def test_sqlite_create_table_is_read_through_its_quoting_and_comments(sqlite_url: str) -> None:
    database = create_database(sqlite_url)
    try:
        await _ddl(
            database,
            "CREATE TABLE t (\n"
            "    id INTEGER PRIMARY KEY AUTOINCREMENT, -- the key, (with a comment)\n"
            "    kind VARCHAR(5) NOT NULL CHECK (kind IN ('a,b', 'check(')),\n"
            "    doc TEXT,\n"
            "    CONSTRAINT doc_json CHECK (doc IS NULL OR json_valid(doc))\n"
            ")",
        )
        async with database.connect() as conn:
            live = (await conn.run_sync(read_live_schema))["t"]
    finally:
        await database.dispose()
    assert {name for name, column in live.columns.items() if column.auto_increment} == {"id"}
    assert live.columns["kind"].type == "enum('a,b','check(')"
    assert live.json_checks == {"doc"}
    assert live.other_checks == []
