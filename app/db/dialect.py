"""The only place where MySQL/MariaDB and SQLite differ in SQL: time arithmetic and JSON tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, literal_column, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement


def is_mysql(conn: AsyncConnection) -> bool:
    """True on MySQL/MariaDB."""
    return conn.dialect.name == "mysql"


def now(conn: AsyncConnection) -> ColumnElement[Any]:
    """The database's current time in UTC, second precision (MySQL sessions run with time_zone +00:00)."""
    return func.now() if is_mysql(conn) else func.datetime("now")


def seconds_ago(conn: AsyncConnection, seconds: float) -> ColumnElement[Any]:
    """The database's current time minus a number of seconds."""
    whole = int(seconds)
    if is_mysql(conn):
        return func.date_sub(func.now(), text(f"INTERVAL {whole} SECOND"))
    return func.datetime("now", f"-{whole} seconds")


def seconds_from_now(conn: AsyncConnection, seconds: float) -> ColumnElement[Any]:
    """The database's current time plus a number of seconds (a lease's end)."""
    whole = int(seconds)
    if is_mysql(conn):
        return func.date_add(func.now(), text(f"INTERVAL {whole} SECOND"))
    return func.datetime("now", f"+{whole} seconds")


def seconds_between(conn: AsyncConnection, start: Any, end: Any) -> ColumnElement[Any]:
    """Whole seconds from start to end (TIMESTAMPDIFF on MySQL)."""
    if is_mysql(conn):
        return func.timestampdiff(literal_column("SECOND"), start, end)
    # Unix seconds, exact; julianday() is a float, and (jd(end) - jd(start)) * 86400 truncated to an
    # integer gives 59 for a 60-second gap.
    return func.cast(func.strftime("%s", end), _integer()) - func.cast(func.strftime("%s", start), _integer())


def json_number(conn: AsyncConnection, column: Any, path: str) -> ColumnElement[Any]:
    """A numeric JSON member (NULL when absent), comparable with numbers on both backends."""
    return func.json_extract(column, path)


def json_text(conn: AsyncConnection, column: Any, path: str) -> ColumnElement[Any]:
    """A string JSON member as text (NULL when absent), comparable with strings on both backends."""
    if is_mysql(conn):
        return func.json_unquote(func.json_extract(column, path))
    return func.json_extract(column, path)


def json_is_true(conn: AsyncConnection, column: Any, path: str) -> ColumnElement[Any]:
    """A condition: the JSON member at path is the boolean true."""
    if is_mysql(conn):
        # Not the seed's `JSON_EXTRACT(...) = true`: on MariaDB JSON_EXTRACT returns text, and that
        # comparison also holds for 1, 1.0 and "1". JSON_CONTAINS alone also holds for [true], so the
        # member must be a JSON boolean too — the same rows as SQLite's json_type() = 'true'.
        member = func.json_extract(column, path)
        return and_(func.json_type(member) == "BOOLEAN", func.json_contains(column, "true", path) == 1)
    return func.json_type(column, path) == "true"


def _integer() -> Any:
    from sqlalchemy import Integer

    return Integer()


def upsert(conn: AsyncConnection, table: Any, values: dict[str, Any], update: dict[str, Any]) -> Any:
    """INSERT … ON DUPLICATE KEY UPDATE (MySQL) / ON CONFLICT DO UPDATE (SQLite) on the primary key."""
    if is_mysql(conn):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return mysql_insert(table).values(**values).on_duplicate_key_update(**update)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    keys = [column.name for column in table.primary_key.columns]
    return sqlite_insert(table).values(**values).on_conflict_do_update(index_elements=keys, set_=update)
