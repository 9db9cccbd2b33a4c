"""A throwaway MariaDB for a benchmark: start it, create a database at the current schema, talk to it directly."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pymysql
from sqlalchemy.engine import make_url

from app.db.engine import MYSQL_INIT, create_database
from app.db.migrate import upgrade
from tests.mysql_server import MysqlServer, start_server


def start(buffer_pool_mb: int = 256) -> MysqlServer:
    """A fresh throwaway MariaDB (never AIFARM_TEST_MYSQL_URL's shared server) with this InnoDB buffer pool."""
    saved = os.environ.pop("AIFARM_TEST_MYSQL_URL", None)
    try:
        server = start_server()
    finally:
        if saved is not None:
            os.environ["AIFARM_TEST_MYSQL_URL"] = saved
    try:
        with connect(server.base_url + "/") as conn, conn.cursor() as cursor:
            # tests/mysql_server.py starts with a 64 MB pool; the variable is dynamic on MariaDB 10.2+.
            cursor.execute(f"SET GLOBAL innodb_buffer_pool_size = {buffer_pool_mb * 2**20}")
    except Exception:
        server.stop()
        raise
    return server


@contextmanager
def running(buffer_pool_mb: int = 256) -> Iterator[MysqlServer]:
    """A throwaway server for the duration of a with-block."""
    server = start(buffer_pool_mb)
    try:
        yield server
    finally:
        server.stop()


def server_process(server: MysqlServer) -> psutil.Process:
    """The mariadbd process, for CPU measurements (100% = one core)."""
    if server.process is None:
        raise RuntimeError("this benchmark needs a server it started itself, to measure its process")
    return psutil.Process(server.process.pid)


async def create_schema(url: str) -> None:
    """Create the database (when missing) and bring it to the current schema with app.db.migrate.upgrade."""
    db = create_database(url, pool_size=1)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def fresh_database(server: MysqlServer, name: str) -> str:
    """Drop and re-create database `name` at the current schema; returns its URL (call outside an event loop)."""
    with connect(server.base_url + "/") as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    url = server.url(name)
    asyncio.run(create_schema(url))
    return url


@contextmanager
def connect(url: str, **kwargs: Any) -> Iterator[pymysql.connections.Connection]:
    """A plain autocommit pymysql connection (UTC, strict mode) for set-up, EXPLAIN and SHOW STATUS."""
    parsed = make_url(url)
    conn = pymysql.connect(
        host=parsed.host or "127.0.0.1", port=parsed.port or 3306, user=parsed.username or "root",
        password=parsed.password or "", database=parsed.database or None, charset="utf8mb4",
        autocommit=True, init_command=MYSQL_INIT, **kwargs,
    )
    try:
        yield conn
    finally:
        conn.close()


def global_status(conn: pymysql.connections.Connection, name: str) -> int:
    """One counter of SHOW GLOBAL STATUS."""
    with conn.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        row = cursor.fetchone()
    return int(row[1]) if row else 0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def sequence_table(n: int) -> str:
    """The name of MariaDB's Sequence-engine table 1..n (needs no creation)."""
    return f"seq_1_to_{int(n)}"
