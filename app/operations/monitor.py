"""Monitoring: table sizes and slow queries (MySQL/MariaDB), storage and row counts (SQLite), the agent's view."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from app.db.engine import Database, mysql_error_code
from app.db.queries import operations as ops

PERFORMANCE_SCHEMA_OFF = (
    "performance_schema is off on this server; enable it with performance_schema=ON in the server's "
    "configuration and restart it"
)
SQLITE_NO_DIGESTS = "SQLite keeps no statement statistics; slow queries are reported on MySQL/MariaDB only"
_ACCESS_DENIED = {1142, 1143, 1044}


async def database_stats(db: Database, *, exact_counts: bool = False) -> dict[str, Any]:
    """Table sizes and slow queries (MySQL/MariaDB) or file, page, WAL sizes and row counts (SQLite)."""
    if db.dialect == "mysql":
        return await _mysql_stats(db, exact_counts=exact_counts)
    return await _sqlite_stats(db)


async def _mysql_stats(db: Database, *, exact_counts: bool) -> dict[str, Any]:
    async with db.connect() as conn:
        tables = await ops.mysql_table_sizes(conn)
        if exact_counts:
            counts = await ops.row_counts(conn, [item["table_name"] for item in tables])
            for item in tables:
                item["rows"] = counts[item["table_name"]]
        slow = await _slow_queries(conn)
    return {"backend": "mysql", "database": db.url.database, "tables": tables, "slow_queries": slow}


async def _slow_queries(conn: Any) -> dict[str, Any]:
    if not await ops.performance_schema_enabled(conn):
        return {"available": False, "message": PERFORMANCE_SCHEMA_OFF}
    try:
        queries = await ops.slow_queries(conn)
    except DBAPIError as exc:
        if mysql_error_code(exc) not in _ACCESS_DENIED:
            raise
        return {"available": False, "message": "this database account may not read performance_schema; "
                "grant it SELECT ON performance_schema.* or run this with the admin URL"}
    return {"available": True, "queries": queries}


async def _sqlite_stats(db: Database) -> dict[str, Any]:
    path = Path(db.url.database or "")
    async with db.connect() as conn:
        storage = await ops.sqlite_storage(conn)
        counts = await ops.row_counts(conn, await ops.list_tables(conn))
    wal = path.with_name(path.name + "-wal")
    return {
        "backend": "sqlite",
        "path": str(path),
        "file_size_bytes": path.stat().st_size if path.exists() else 0,
        "page_count": int(storage["page_count"]),
        "page_size": int(storage["page_size"]),
        "freelist_count": int(storage["freelist_count"]),
        "journal_mode": storage["journal_mode"],
        "wal_size_bytes": wal.stat().st_size if wal.exists() else 0,
        "tables": [{"table_name": name, "table_rows": rows} for name, rows in counts.items()],
        "slow_queries": {"available": False, "message": SQLITE_NO_DIGESTS},
    }


async def agent_view(db: Database, samples: int = 5) -> dict[str, Any]:
    """The database as this process sees it: median round trip of `SELECT 1` (ms) and the connection pool."""
    times: list[float] = []
    async with db.connect() as conn:
        for _ in range(samples):
            start = time.perf_counter()
            await ops.select_one(conn)
            times.append((time.perf_counter() - start) * 1000)
    pool = db.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    size = getattr(pool, "size", None)
    return {
        "round_trip_ms": round(statistics.median(times), 3),
        "round_trip_samples_ms": [round(value, 3) for value in times],
        "pool": {
            "status": pool.status(),
            "checked_out": checked_out() if callable(checked_out) else None,
            "size": size() if callable(size) else None,
        },
    }
