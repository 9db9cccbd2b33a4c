"""Backup and restore: mariadb-dump/mysqldump and the mysql client on MySQL/MariaDB, the online backup API on SQLite.

A backup file whose name ends in `.gz` is gzip-compressed. A dump made here ends with a line
`-- aifarm-backup sha256=HEX` over everything before it, so a corrupt or truncated file is refused
before the target database is touched. Restore refuses a database with rows unless forced.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import shutil
import sqlite3
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy.engine import URL

from app.db.engine import Database
from app.db.migrate import current_revision, head_revision, known_revisions
from app.db.queries import operations as ops
from app.db.schema import SEED_TABLES
from app.errors import AifarmError, Conflict, SchemaError

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")
DUMP_OPTIONS = ("--single-transaction", "--routines", "--triggers", "--hex-blob", "--no-tablespaces",
                "--default-character-set=utf8mb4")
CHECKSUM_PREFIX = b"-- aifarm-backup sha256="
SQLITE_MAGIC = b"SQLite format 3\x00"
CHUNK = 1 << 20
_TAIL = 256  # bytes kept back while hashing: the checksum line is shorter


def _gz(path: Path) -> bool:
    return path.name.endswith(".gz")


def _first_line(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]  # past any warnings the tool printed first
    return (errors or lines or ["failed without a message"])[0]


def _find_tool(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}")
                                            if os.access(p, os.X_OK)), None)
        if found:
            return found
    raise AifarmError(f"neither {' nor '.join(names)} is installed; install the MariaDB/MySQL client "
                      "(Debian/Ubuntu: apt-get install mariadb-client)")


def _tool_args(url: URL) -> list[str]:
    """Connection options for the MySQL command-line tools; the password goes through MYSQL_PWD, never here."""
    args = ["--no-defaults"]  # must come first: no option file may swap the account or add a password
    if url.username:
        args.append(f"--user={url.username}")
    socket_path = dict(url.query).get("unix_socket")
    if socket_path:
        args.append(f"--socket={socket_path}")
    else:
        args += [f"--host={url.host or '127.0.0.1'}", f"--port={url.port or 3306}", "--protocol=TCP"]
    return args


def _tool_env(url: URL) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "MYSQL_PWD"}
    if url.password:
        env["MYSQL_PWD"] = str(url.password)
    return env


@contextmanager
def _writer(path: Path) -> Iterator[tuple[Path, IO[bytes]]]:
    """A private (0600) temporary file beside path, gzip-compressed for .gz; renamed onto path on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    raw = os.fdopen(fd, "wb")
    try:
        handle: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb", filename="")) if _gz(path) else raw
        try:
            yield tmp, handle
        finally:
            if handle is not raw:
                handle.close()
            raw.flush()
            os.fsync(raw.fileno())
            raw.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _chunks(path: Path) -> Iterator[bytes]:
    """The backup's content, decompressed for .gz; a missing, unreadable or damaged file is an AifarmError."""
    if not path.is_file():
        raise AifarmError(f"backup file {path} does not exist")
    try:
        with (gzip.open(path, "rb") if _gz(path) else path.open("rb")) as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise AifarmError(f"backup file {path} is not a complete gzip file ({exc}): it is corrupt or truncated") from None
    except OSError as exc:
        raise AifarmError(f"cannot read backup file {path}: {exc.strerror or exc}") from None


# --- MySQL/MariaDB -------------------------------------------------------------------------------------------


async def _run_tool(tool: str, args: list[str], env: dict[str, str], *, stdin: bool) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            tool, *args, env=env, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL if stdin else asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise AifarmError(f"{Path(tool).name}: cannot start: {exc.strerror or exc}") from None


async def _backup_mysql(db: Database, path: Path) -> dict[str, Any]:
    tool = _find_tool(DUMP_TOOLS)
    assert db.url.database
    proc = await _run_tool(tool, [*_tool_args(db.url), *DUMP_OPTIONS, db.url.database], _tool_env(db.url), stdin=False)
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    digest = hashlib.sha256()
    size = 0
    try:
        with _writer(path) as (_tmp, out):
            last = b"\n"
            while chunk := await proc.stdout.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                last = chunk[-1:]
            code = await proc.wait()
            if code != 0:
                raise AifarmError(f"{Path(tool).name}: {_first_line(await errors)}")
            if size == 0:
                raise AifarmError(f"{Path(tool).name}: wrote nothing")
            if last != b"\n":
                digest.update(b"\n")
                out.write(b"\n")
            out.write(CHECKSUM_PREFIX + digest.hexdigest().encode() + b"\n")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not errors.done():
            errors.cancel()
    return {"backend": "mysql", "database": db.url.database, "path": str(path), "tool": Path(tool).name,
            "compressed": _gz(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _verify_dump(path: Path) -> dict[str, Any]:
    """Check a dump end to end before anything is restored: header, completeness, and our checksum when present."""
    digest = hashlib.sha256()
    head = b""
    tail = b""
    size = 0
    for chunk in _chunks(path):
        if len(head) < 4096:
            head += chunk[: 4096 - len(head)]
        size += len(chunk)
        buffer = tail + chunk
        if len(buffer) > _TAIL:
            digest.update(buffer[:-_TAIL])
            tail = buffer[-_TAIL:]
        else:
            tail = buffer
    if head.startswith(SQLITE_MAGIC):
        raise AifarmError(f"backup file {path} is an SQLite database; restore it into an SQLite database (sqlite:///PATH)")
    if b"-- MariaDB dump" not in head and b"-- MySQL dump" not in head:
        raise AifarmError(f"backup file {path} is not a MariaDB/MySQL dump")
    body = tail.rstrip(b"\n")
    cut = body.rfind(b"\n") + 1
    last_line = body[cut:]
    digest.update(tail[:cut])
    if last_line.startswith(CHECKSUM_PREFIX):
        expected = last_line[len(CHECKSUM_PREFIX):].strip().decode("ascii", "replace")
        if digest.hexdigest() != expected:
            raise AifarmError(f"backup file {path} is corrupt: its content does not match the checksum it was written with")
        return {"bytes": size, "checksum": "verified"}
    if b"-- Dump completed" in last_line:
        return {"bytes": size, "checksum": "absent (not made by aifarm db backup)"}
    raise AifarmError(f"backup file {path} is truncated: it does not end the way a complete dump does")


def _restore_stream(path: Path, prefix: str) -> Iterator[bytes]:
    """The dump with the statements that empty the target placed first (after MariaDB's sandbox line, if any)."""
    chunks = _chunks(path)
    first = next(chunks, b"")
    if first.startswith(b"/*M!999999"):
        end = first.find(b"\n") + 1
        yield first[:end]
        first = first[end:]
    yield prefix.encode()
    yield first
    yield from chunks


async def _ensure_mysql_database(db: Database) -> None:
    from app.db.migrate import _create_mysql_database_if_missing

    await _create_mysql_database_if_missing(db)


async def _restore_mysql(db: Database, path: Path, force: bool) -> dict[str, Any]:
    verified = await asyncio.to_thread(_verify_dump, path)
    await _ensure_mysql_database(db)
    async with db.connect() as conn:
        tables = await ops.list_tables(conn)
        counts = await ops.existing_row_counts(conn, SEED_TABLES)
    _refuse_non_empty(db, counts, force)
    tool = _find_tool(CLIENT_TOOLS)
    assert db.url.database
    proc = await _run_tool(tool, [*_tool_args(db.url), "--default-character-set=utf8mb4", "--batch", db.url.database],
                           _tool_env(db.url), stdin=True)
    assert proc.stdin is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    stream = _restore_stream(path, ops.mysql_drop_tables_script(tables))
    try:
        while True:
            chunk = await asyncio.to_thread(next, stream, None)
            if chunk is None:
                break
            proc.stdin.write(chunk)
            await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client stopped at an error: its message is on stderr
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    code = await proc.wait()
    message = await errors
    if code != 0:
        raise AifarmError(f"{Path(tool).name}: {_first_line(message)}")
    await db.dispose()
    return {"backend": "mysql", "database": db.url.database, "path": str(path), "tool": Path(tool).name,
            **verified, "replaced_rows": sum(counts.values()), **await _revision(db)}


# --- SQLite ----------------------------------------------------------------------------------------------


def _read_only(path: Path) -> str:
    """An SQLite URI that opens the file read-only (any characters in the path are escaped)."""
    return path.resolve().as_uri() + "?mode=ro"


def _sqlite_path(db: Database) -> Path:
    return Path(db.url.database or "")


def _backup_sqlite_sync(source: Path, path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".aifarm-backup-", dir=path.parent) as scratch:
        copy = Path(scratch) / "copy.sqlite3"
        src = sqlite3.connect(_read_only(source), uri=True, timeout=30)
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
            ops.sqlite_set_rollback_journal(dst)
        finally:
            dst.close()
            src.close()
        with _writer(path) as (_tmp, out), copy.open("rb") as handle:
            shutil.copyfileobj(handle, out, CHUNK)


async def _backup_sqlite(db: Database, path: Path) -> dict[str, Any]:
    source = _sqlite_path(db)
    if not source.is_file():
        raise AifarmError(f"the SQLite database {source} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        await asyncio.to_thread(_backup_sqlite_sync, source, path)
    except sqlite3.Error as exc:
        raise AifarmError(f"backup of {source} failed: {exc}") from None
    return {"backend": "sqlite", "database": str(source), "path": str(path), "compressed": _gz(path),
            "bytes": path.stat().st_size}


def _check_sqlite_file(path: Path, original: Path) -> None:
    with path.open("rb") as handle:
        header = handle.read(100)
    if not header.startswith(SQLITE_MAGIC):
        if b"-- MariaDB dump" in header or b"-- MySQL dump" in header or header.startswith(b"/*M!"):
            raise AifarmError(f"backup file {original} is a MariaDB/MySQL dump; restore it into a MySQL/MariaDB database")
        raise AifarmError(f"backup file {original} is not an SQLite database")
    if len(header) < 100:
        raise AifarmError(f"backup file {original} is truncated")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size = path.stat().st_size
    header_valid = pages > 0 and header[24:28] == header[92:96]
    if page_size < 512 or size % page_size or (header_valid and pages * page_size != size):
        raise AifarmError(f"backup file {original} is truncated: {size} bytes where the database says "
                          f"{pages * page_size}")
    try:
        con = sqlite3.connect(_read_only(path), uri=True)
        try:
            problems = ops.sqlite_file_problems(con)
            tables = ops.sqlite_file_tables(con)
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise AifarmError(f"backup file {original} is corrupt: {exc}") from None
    if problems:
        raise AifarmError(f"backup file {original} is corrupt: {problems[0]}")
    if "alembic_version" not in tables:
        raise AifarmError(f"backup file {original} holds no AI Farm database (no alembic_version table)")


def _prepare_sqlite_backup(path: Path, scratch: Path) -> Path:
    """The backup as a plain, checked SQLite file (decompressed into scratch for .gz)."""
    plain = path
    if _gz(path):
        plain = scratch / "backup.sqlite3"
        with plain.open("wb") as out:
            for chunk in _chunks(path):
                out.write(chunk)
    elif not path.is_file():
        raise AifarmError(f"backup file {path} does not exist")
    _check_sqlite_file(plain, path)
    return plain


def _copy_sqlite(source: Path, target: Path) -> None:
    src = sqlite3.connect(_read_only(source), uri=True)
    dst = sqlite3.connect(target, timeout=30)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


async def _restore_sqlite(db: Database, path: Path, force: bool) -> dict[str, Any]:
    target = _sqlite_path(db)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".aifarm-restore-", dir=target.parent) as scratch:
        plain = await asyncio.to_thread(_prepare_sqlite_backup, path, Path(scratch))
        async with db.connect() as conn:
            counts = await ops.existing_row_counts(conn, SEED_TABLES)
        _refuse_non_empty(db, counts, force)
        await db.dispose()
        try:
            await asyncio.to_thread(_copy_sqlite, plain, target)
        except sqlite3.Error as exc:
            raise AifarmError(f"restore into {target} failed: {exc}") from None
    return {"backend": "sqlite", "database": str(target), "path": str(path), "replaced_rows": sum(counts.values()),
            **await _revision(db)}


# --- both ------------------------------------------------------------------------------------------------


def _refuse_non_empty(db: Database, counts: dict[str, int], force: bool) -> None:
    total = sum(counts.values())
    if total and not force:
        where = ", ".join(f"{name} {n}" for name, n in counts.items() if n)
        raise Conflict(f"the database {db.display_url} is not empty ({total} rows: {where}); "
                       "restore replaces everything in it: pass --force to do so")


async def _revision(db: Database) -> dict[str, Any]:
    revision = await current_revision(db)
    if revision is None:
        raise SchemaError(f"the restored database {db.display_url} has no AI Farm schema revision")
    if revision not in known_revisions():
        raise SchemaError(f"the restored database is at schema revision {revision}, which this version of AI Farm "
                          "does not know; upgrade AI Farm")
    return {"revision": revision, "current": revision == head_revision()}


async def backup(db: Database, path: Path) -> dict[str, Any]:
    """Write a consistent copy of the database to path (gzip for .gz); returns what was written."""
    path = Path(path)
    if db.dialect == "mysql":
        return await _backup_mysql(db, path)
    return await _backup_sqlite(db, path)


async def restore(db: Database, path: Path, force: bool) -> dict[str, Any]:
    """Replace the database's content with a backup; refuses a database with rows unless force (Conflict)."""
    path = Path(path)
    if db.dialect == "mysql":
        return await _restore_mysql(db, path, force)
    return await _restore_sqlite(db, path, force)
