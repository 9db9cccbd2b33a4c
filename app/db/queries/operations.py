"""SQL of Operations: maintenance leases, monitoring (table sizes, slow queries, SQLite storage), backup/restore
checks, and the least-privilege agent account."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select, table, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import dialect
from app.db.queries import row_dict
from app.db.schema import maintenance_runs

# --- maintenance leases ----------------------------------------------------------------------------------


async def acquire_lease(conn: AsyncConnection, sweep: str, holder: str, seconds: float, *,
                        every: float | None = None) -> bool:
    """Take (or renew) the sweep's lease for `seconds`; True when this holder has it now.

    The row is created if missing (the primary key decides a race), then one UPDATE takes the lease only
    when it is free, expired or already this holder's (and, with `every`, only when the sweep last ran at
    least that many seconds ago); its row count decides, so two holders never both get it.
    """
    await conn.execute(dialect.upsert(conn, maintenance_runs, {"sweep": sweep}, {"sweep": sweep}))
    conditions = [
        maintenance_runs.c.sweep == sweep,
        or_(
            maintenance_runs.c.lease_until.is_(None),
            maintenance_runs.c.lease_until < dialect.now(conn),
            maintenance_runs.c.holder == holder,
        ),
    ]
    if every is not None:
        conditions.append(or_(maintenance_runs.c.last_run_at.is_(None),
                              maintenance_runs.c.last_run_at <= dialect.seconds_ago(conn, every)))
    result = await conn.execute(
        update(maintenance_runs).where(and_(*conditions))
        .values(holder=holder, lease_until=dialect.seconds_from_now(conn, seconds))
    )
    return result.rowcount == 1


async def finish_run(conn: AsyncConnection, sweep: str, holder: str, result: dict[str, Any] | None) -> bool:
    """Record a run's result and time and give the lease back; False when the lease was no longer this holder's."""
    values: dict[str, Any] = {"lease_until": None}
    if result is not None:
        values.update(last_result=result, last_run_at=dialect.now(conn))
    outcome = await conn.execute(
        update(maintenance_runs).where(maintenance_runs.c.sweep == sweep, maintenance_runs.c.holder == holder)
        .values(**values)
    )
    return outcome.rowcount == 1


async def release_lease(conn: AsyncConnection, sweep: str, holder: str) -> None:
    """Give the lease back without recording a run."""
    await finish_run(conn, sweep, holder, None)


async def get_run(conn: AsyncConnection, sweep: str) -> dict[str, Any] | None:
    """One maintenance_runs row, or None."""
    row = (await conn.execute(select(maintenance_runs).where(maintenance_runs.c.sweep == sweep))).first()
    return row_dict(row) if row else None


async def list_runs(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every maintenance_runs row, by sweep name."""
    return [row_dict(row) for row in await conn.execute(select(maintenance_runs).order_by(maintenance_runs.c.sweep))]


async def db_now(conn: AsyncConnection) -> datetime:
    """The database server's current time (naive UTC)."""
    value = (await conn.execute(select(dialect.now(conn)))).scalar_one()
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


# --- monitoring ------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**63 else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


async def select_one(conn: AsyncConnection) -> None:
    """The cheapest round trip: SELECT 1."""
    await conn.execute(text("SELECT 1"))


async def list_tables(conn: AsyncConnection) -> list[str]:
    """The base tables of the connection's database (MySQL: the current schema; SQLite: the main file)."""
    if dialect.is_mysql(conn):
        query = text("SELECT table_name AS name FROM information_schema.tables "
                     "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name")
    else:
        query = text("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    return [str(name) for name in (await conn.execute(query)).scalars()]


async def row_counts(conn: AsyncConnection, names: Iterable[str]) -> dict[str, int]:
    """Exact COUNT(*) of each named table."""
    out: dict[str, int] = {}
    for name in names:
        out[name] = int((await conn.execute(select(func.count()).select_from(table(name)))).scalar_one())
    return out


async def existing_row_counts(conn: AsyncConnection, names: Iterable[str]) -> dict[str, int]:
    """Exact row counts of those of the named tables that exist."""
    present = set(await list_tables(conn))
    return await row_counts(conn, [name for name in names if name in present])


async def _is_mysql8(conn: AsyncConnection) -> bool:
    version = str((await conn.execute(text("SELECT VERSION()"))).scalar_one())
    match = re.match(r"(\d+)", version)
    return "mariadb" not in version.lower() and match is not None and int(match.group(1)) >= 8


async def mysql_table_sizes(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The seed's "check table sizes" for the current schema: table_name, table_rows (InnoDB's estimate),
    data_size_mb, index_size_mb, largest first."""
    if await _is_mysql8(conn):
        # MySQL 8 caches these statistics for a day by default; ask for fresh ones.
        await conn.execute(text("SET SESSION information_schema_stats_expiry = 0"))
    rows = await conn.execute(text(
        "SELECT table_name AS table_name, table_rows AS table_rows, "
        "data_length/1024/1024 AS data_size_mb, index_length/1024/1024 AS index_size_mb "
        "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' "
        "ORDER BY data_length DESC, table_name"
    ))
    out = []
    for row in rows:
        item = {key: _plain(value) for key, value in row_dict(row).items()}
        item["table_rows"] = int(item["table_rows"] or 0)
        item["data_size_mb"] = float(item["data_size_mb"] or 0)
        item["index_size_mb"] = float(item["index_size_mb"] or 0)
        out.append(item)
    return out


async def performance_schema_enabled(conn: AsyncConnection) -> bool:
    """Whether the server runs with performance_schema ON."""
    return bool(int((await conn.execute(text("SELECT @@performance_schema"))).scalar_one() or 0))


async def slow_queries(conn: AsyncConnection, limit: int = 10) -> list[dict[str, Any]]:
    """The seed's "find slow queries": statement digests of the current schema, slowest average first."""
    rows = await conn.execute(text(
        "SELECT * FROM performance_schema.events_statements_summary_by_digest "
        "WHERE schema_name = DATABASE() ORDER BY avg_timer_wait DESC LIMIT :limit"
    ), {"limit": int(limit)})
    out = []
    for row in rows:
        item = {key.lower(): _plain(value) for key, value in row_dict(row).items()}
        # Timer columns are picoseconds.
        item["avg_ms"] = float(item.get("avg_timer_wait") or 0) / 1e9
        out.append(item)
    return out


async def sqlite_storage(conn: AsyncConnection) -> dict[str, Any]:
    """page_count, page_size, freelist_count and journal_mode of the main SQLite file."""
    out: dict[str, Any] = {}
    for pragma in ("page_count", "page_size", "freelist_count", "journal_mode"):
        out[pragma] = _plain((await conn.execute(text(f"PRAGMA {pragma}"))).scalar_one())
    return out


# --- restore: the target's tables, and what replaces them --------------------------------------------------


def _quote_mysql_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mysql_drop_tables_script(names: Sequence[str]) -> str:
    """SQL for the mysql client that drops these tables whatever references them (a restore replaces them all)."""
    if not names:
        return ""
    listed = ", ".join(_quote_mysql_identifier(name) for name in names)
    return f"SET FOREIGN_KEY_CHECKS = 0;\nDROP TABLE IF EXISTS {listed};\nSET FOREIGN_KEY_CHECKS = 1;\n"


def sqlite_file_problems(con: sqlite3.Connection) -> list[str]:
    """What PRAGMA integrity_check finds wrong with an SQLite file (empty when it is sound)."""
    rows = [str(row[0]) for row in con.execute("PRAGMA integrity_check").fetchall()]
    return [] if rows == ["ok"] else rows


def sqlite_file_tables(con: sqlite3.Connection) -> list[str]:
    """The tables of an SQLite file opened with the stdlib driver."""
    return [str(row[0]) for row in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def sqlite_set_rollback_journal(con: sqlite3.Connection) -> None:
    """Make a backup copy one self-contained file (no -wal beside it)."""
    con.execute("PRAGMA journal_mode=DELETE").fetchall()


# --- the least-privilege agent account ---------------------------------------------------------------------

ACCOUNT_PART = re.compile(r"^[A-Za-z0-9_.%-]+$")
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
AGENT_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def _account(name: str, host: str) -> str:
    return f"'{name}'@'{host}'"


def _string_literal(value: str) -> str:
    # Doubled quotes mean a quote in every sql_mode; backslashes (mode-dependent) are refused by the caller.
    return "'" + value.replace("'", "''") + "'"


def _grant_database(name: str) -> str:
    # In GRANT … ON db.*, '_' and '%' are wildcards: escape them so the grant covers this database only.
    return "`" + name.replace("`", "``").replace("_", "\\_").replace("%", "\\%") + "`"


def agent_user_statements(name: str, host: str, database: str, password: str) -> list[str]:
    """CREATE USER (or reset its password) and GRANT SELECT, INSERT, UPDATE, DELETE on the farm database only."""
    account = _account(name, host)
    return [
        f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {_string_literal(password)}",
        f"ALTER USER {account} IDENTIFIED BY {_string_literal(password)}",
        f"GRANT {AGENT_PRIVILEGES} ON {_grant_database(database)}.* TO {account}",
    ]


async def execute_statements(conn: AsyncConnection, statements: Sequence[str]) -> None:
    """Run literal statements in order (no bind parameters: colons are left alone)."""
    for statement in statements:
        await conn.exec_driver_sql(statement.replace("%", "%%") if dialect.is_mysql(conn) else statement)
