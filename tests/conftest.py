"""Shared fixtures: a real MariaDB/MySQL server for the session, and a fresh database per test on each backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.db.engine import Database, create_database
from app.db.migrate import upgrade
from tests.mysql_server import MysqlServer, start_server

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MysqlServer]:
    """The test MariaDB/MySQL server (started once per run, stopped at the end)."""
    try:
        server = start_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _drop_database_sync(server: MysqlServer, name: str) -> None:
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(server.base_url)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password or "")
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.fixture
def mysql_url(request: pytest.FixtureRequest, mysql_server: MysqlServer) -> Iterator[str]:
    """The URL of a database name that is unique to this test (created by `db upgrade`, dropped after)."""
    name = f"aifarm_t_{uuid.uuid4().hex[:10]}"
    yield mysql_server.url(name)
    _drop_database_sync(mysql_server, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of an SQLite file in this test's temporary directory."""
    return f"sqlite:///{tmp_path / 'farm.sqlite3'}"


@pytest.fixture(params=["sqlite", "mysql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL, once per backend."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A database at the current schema revision, once per backend."""
    database = create_database(database_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()
