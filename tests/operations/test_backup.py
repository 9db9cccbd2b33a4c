"""Backup and restore on MariaDB (mariadb-dump, mariadb client) and SQLite (online backup API), plain and .gz."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from app.db.engine import Database, create_database
from app.db.migrate import head_revision, upgrade
from app.db.schema import clients
from app.errors import AifarmError, Conflict
from app.operations.backup import backup, restore
from tests.mysql_server import MysqlServer
from tests.operations import db_snapshot, populate, utcnow

EXPECTED_TABLES = {"alembic_version", "clients", "tasks", "task_assignments", "checkpoints", "model_versions",
                   "task_logs", "client_logs", "performance_metrics", "farms", "task_runs", "task_metrics",
                   "maintenance_runs", "farm_dataset_hosts", "bundles", "peer_links", "datasets",
                   "dataset_shard_copies"}


def _drop(server: MysqlServer, name: str) -> None:
    import pymysql

    url = make_url(server.base_url)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password or "")
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.fixture
def new_mysql_url(mysql_server: MysqlServer) -> Iterator[Callable[[], str]]:
    """Makes URLs of fresh database names on the test server (not created); all are dropped after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(f"aifarm_t_{uuid.uuid4().hex[:10]}")
        return mysql_server.url(names[-1])

    yield make
    for name in names:
        _drop(mysql_server, name)


@pytest.fixture
def target_url(new_mysql_url: Callable[[], str]) -> str:
    """A second database name on the test server (not created), dropped after the test."""
    return new_mysql_url()


@pytest.fixture
async def source(mysql_url: str) -> AsyncIterator[Database]:
    """A populated MariaDB farm database."""
    db = create_database(mysql_url)
    await upgrade(db)
    await populate(db)
    try:
        yield db
    finally:
        await db.dispose()


async def _upgraded(url: str) -> Database:
    db = create_database(url)
    await upgrade(db)
    return db


async def _add_client(db: Database, client_id: str) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(clients).values(id=client_id, cpu_info={}, ram_info={}, last_seen=utcnow(),
                                                  status="active"))


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] = ord("X") if data[middle] != ord("X") else ord("Y")
    path.write_bytes(bytes(data))


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


async def test_mariadb_backup_restores_every_row(source: Database, new_mysql_url: Callable[[], str],
                                                 tmp_path: Path) -> None:
    """A dump (plain and .gz) restored into a database that does not exist yet, and into an upgraded empty one,
    holds every row of every table; the file is private and ends with its checksum."""
    expected = await db_snapshot(source)
    assert set(expected) == EXPECTED_TABLES and all(expected[name] for name in EXPECTED_TABLES)
    plain, packed = tmp_path / "farm.sql", tmp_path / "farm.sql.gz"
    made = await backup(source, plain)
    assert made["tool"] in ("mariadb-dump", "mysqldump") and made["bytes"] == plain.stat().st_size
    assert plain.stat().st_mode & 0o777 == 0o600
    assert plain.read_bytes().rstrip().rsplit(b"\n", 1)[-1].startswith(b"-- aifarm-backup sha256=")
    await backup(source, packed)
    assert gzip.decompress(packed.read_bytes())[:300] == plain.read_bytes()[:300]

    missing = create_database(new_mysql_url())  # the database does not exist: restore creates it
    empty = await _upgraded(new_mysql_url())  # schema, no rows
    try:
        result = await restore(missing, plain, force=False)
        assert result["revision"] == head_revision() and result["current"] and result["checksum"] == "verified"
        assert result["replaced_rows"] == 0
        assert await db_snapshot(missing) == expected
        await restore(empty, packed, force=False)
        assert await db_snapshot(empty) == expected
    finally:
        await missing.dispose()
        await empty.dispose()


async def test_mariadb_restore_refuses_rows_and_force_replaces(source: Database, target_url: str,
                                                               tmp_path: Path) -> None:
    """A target with rows is refused (Conflict naming the count) and left as it was; --force replaces it all."""
    dump = tmp_path / "farm.sql.gz"
    await backup(source, dump)
    expected = await db_snapshot(source)
    target = await _upgraded(target_url)
    try:
        await _add_client(target, "only-here")
        async with target.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE stray (id INT PRIMARY KEY)")
        before = await db_snapshot(target)
        with pytest.raises(Conflict, match=r"not empty \(1 rows: clients 1\).*--force"):
            await restore(target, dump, force=False)
        assert await db_snapshot(target) == before
        await restore(target, dump, force=True)
        assert await db_snapshot(target) == expected  # the stray table is gone too
    finally:
        await target.dispose()


async def test_mariadb_corrupt_or_missing_dump_leaves_target_alone(source: Database, target_url: str,
                                                                   tmp_path: Path) -> None:
    """A flipped byte, a truncated .sql or .gz, a missing file or an SQLite file: a clear error, target unchanged."""
    plain, packed = tmp_path / "farm.sql", tmp_path / "farm.sql.gz"
    await backup(source, plain)
    await backup(source, packed)
    target = await _upgraded(target_url)
    try:
        await _add_client(target, "keep-me")
        before = await db_snapshot(target)
        flipped = tmp_path / "flipped.sql"
        flipped.write_bytes(plain.read_bytes())
        _flip_middle_byte(flipped)
        cut = tmp_path / "cut.sql"
        cut.write_bytes(plain.read_bytes())
        _truncate(cut)
        cut_gz = tmp_path / "cut.sql.gz"
        cut_gz.write_bytes(packed.read_bytes())
        _truncate(cut_gz)
        sqlite_file = tmp_path / "farm.sqlite3.bak"
        sqlite_file.write_bytes(b"SQLite format 3\x00" + bytes(4000))
        cases = {flipped: "corrupt", cut: "truncated", cut_gz: "gzip", tmp_path / "absent.sql": "does not exist",
                 sqlite_file: "SQLite"}
        for path, words in cases.items():
            with pytest.raises(AifarmError, match=words) as caught:
                await restore(target, path, force=True)
            assert not isinstance(caught.value, Conflict)
            assert await db_snapshot(target) == before, path
    finally:
        await target.dispose()


async def test_mariadb_dump_tool_error_is_one_line(mysql_server: MysqlServer, tmp_path: Path) -> None:
    """A refused login names the tool and its message; the password never appears; no file is left."""
    url = make_url(mysql_server.base_url)
    bad = create_database(f"mysql://nobody:s3cret-pw@{url.host}:{url.port}/nowhere")
    try:
        with pytest.raises(AifarmError) as caught:
            await backup(bad, tmp_path / "x.sql")
    finally:
        await bad.dispose()
    message = str(caught.value)
    assert message.startswith(("mariadb-dump: ", "mysqldump: ")) and "\n" not in message
    assert "s3cret-pw" not in message and "nobody" in message
    assert list(tmp_path.iterdir()) == []


async def test_sqlite_backup_and_restore(tmp_path: Path) -> None:
    """The online backup (plain and .gz) of a populated SQLite farm restores into an empty file row for row;
    a file with rows is refused, --force replaces; damaged backups are refused with the target unchanged."""
    source = await _upgraded(f"sqlite:///{tmp_path / 'farm.sqlite3'}")
    try:
        await populate(source)
        expected = await db_snapshot(source)
        assert set(expected) == EXPECTED_TABLES
        plain, packed = tmp_path / "b" / "farm.bak", tmp_path / "b" / "farm.bak.gz"
        assert (await backup(source, plain))["bytes"] == plain.stat().st_size
        assert (await backup(source, packed))["compressed"]
    finally:
        await source.dispose()
    assert plain.stat().st_mode & 0o777 == 0o600

    for name, path in (("plain", plain), ("packed", packed)):
        target = create_database(f"sqlite:///{tmp_path / f'{name}.sqlite3'}")  # a file that does not exist yet
        try:
            result = await restore(target, path, force=False)
            assert result["revision"] == head_revision()
            assert await db_snapshot(target) == expected
        finally:
            await target.dispose()

    target = await _upgraded(f"sqlite:///{tmp_path / 'busy.sqlite3'}")
    try:
        await _add_client(target, "only-here")
        before = await db_snapshot(target)
        with pytest.raises(Conflict, match="1 rows: clients 1"):
            await restore(target, plain, force=False)
        cut, cut_gz, junk = tmp_path / "cut.bak", tmp_path / "cut.bak.gz", tmp_path / "junk.bak"
        cut.write_bytes(plain.read_bytes())
        _truncate(cut)
        cut_gz.write_bytes(packed.read_bytes())
        _truncate(cut_gz)
        junk.write_bytes(b"-- MariaDB dump 10.19\nDROP TABLE clients;\n")
        for path, words in ((cut, "truncated"), (cut_gz, "gzip"), (junk, "MySQL dump"),
                            (tmp_path / "absent.bak", "does not exist")):
            with pytest.raises(AifarmError, match=words):
                await restore(target, path, force=True)
        assert await db_snapshot(target) == before
        await restore(target, packed, force=True)
        assert await db_snapshot(target) == expected
    finally:
        await target.dispose()
