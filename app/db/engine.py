"""The async engine for MySQL/MariaDB (aiomysql) or SQLite (aiosqlite), with each backend's connection set-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.db.sqlite_file import check_sqlite_file
from app.db.urls import parse_database_url, redact_url
from app.errors import DatabaseUnavailable, SchemaError

log = logging.getLogger(__name__)

# Every MySQL session works in UTC and strict mode, whatever the server's defaults are.
MYSQL_INIT = (
    "SET time_zone = '+00:00', "
    "sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
)
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connecting and logging in to MySQL must end within this, even when the server never answers.
CONNECT_TIMEOUT_S = 10

# MySQL client error codes that mean "cannot talk to the server".
_CONNECT_TIMED_OUT = 2013
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2055}
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DATABASE = 1049


class Database:
    """An engine plus what the product needs to know about it; the caller owns transactions.

    A task cancelled in the middle of a statement leaves its connection invalidated half-way, and on SQLite the
    file then stays locked or reports "database is locked" to the next writer. Tasks that use the database are
    therefore cancelled between blocks: `cancel_between_blocks` for some tasks, `quiesce` (all but the caller) for
    a stopping agent. Blocks under way run to their end; new ones of those tasks wait until they are cancelled.
    """

    def __init__(self, url: URL, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self._inside: dict[asyncio.Task[Any], int] = {}  # tasks in a begin()/connect() block → how deeply
        self._stopping: set[asyncio.Task[Any]] = set()  # their new blocks wait: they are about to be cancelled
        self._quiet_for: asyncio.Task[Any] | None = None  # while quiesced, the one task that still opens blocks
        self._gate: asyncio.Future[None] | None = None  # what waiting blocks wait on; resume() opens it
        self._exits: list[asyncio.Event] = []  # set whenever a block ends

    @property
    def dialect(self) -> str:
        """'mysql' or 'sqlite'."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        """The URL with its password hidden."""
        return redact_url(self.url)

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection inside a transaction that commits on success and rolls back on error."""
        return self._opened(self.engine.begin)

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads; statements run in an implicit transaction rolled back at exit."""
        return self._opened(self.engine.connect)

    @asynccontextmanager
    async def _opened(self, opener: Callable[[], AbstractAsyncContextManager[AsyncConnection]]
                      ) -> AsyncIterator[AsyncConnection]:
        async with self._block():
            try:
                async with opener() as conn:
                    yield conn
            except (OperationalError, InterfaceError) as exc:
                if not is_connection_error(exc):
                    raise
                raise describe_connect_error(exc, self.url) from exc

    @asynccontextmanager
    async def _block(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is None:
            yield
            return
        while self._waits(task):
            if self._gate is None:
                self._gate = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._gate)  # ended by a cancellation, or by resume()
        self._inside[task] = self._inside.get(task, 0) + 1
        try:
            yield
        finally:
            depth = self._inside.pop(task) - 1
            if depth:
                self._inside[task] = depth
            for event in self._exits:
                event.set()

    def _waits(self, task: asyncio.Task[Any]) -> bool:
        if task in self._inside:
            return False  # a nested block of one under way: it must be able to finish
        return task in self._stopping or (self._quiet_for is not None and task is not self._quiet_for)

    async def _until_outside(self, busy: Callable[[], list[asyncio.Task[Any]]], timeout: float) -> int:
        """Wait until busy() is empty, at most `timeout` seconds; how many it still names then."""
        deadline = asyncio.get_running_loop().time() + timeout
        while left := busy():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return len(left)
            event = asyncio.Event()
            self._exits.append(event)
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                self._exits.remove(event)
        return 0

    async def cancel_between_blocks(self, tasks: Sequence[asyncio.Task[Any]], timeout: float) -> None:
        """Cancel these tasks, each once it is outside any connection block (at most `timeout` seconds from now),
        and wait for them to end."""
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            self._stopping.add(task)  # until it has ended: a task told to stop must not begin a block meanwhile
            task.add_done_callback(self._stopping.discard)
        try:
            await self._until_outside(lambda: [t for t in pending if t in self._inside], timeout)
        finally:
            for task in pending:
                task.cancel()  # even when this wait is itself cancelled
        await asyncio.gather(*pending, return_exceptions=True)

    async def quiesce(self, timeout: float) -> int:
        """From now on only the calling task opens new connection blocks (the others wait), and the blocks under
        way are given `timeout` seconds to end; returns how many were still under way then."""
        me = asyncio.current_task()
        self._quiet_for = me
        return await self._until_outside(lambda: [t for t in self._inside if t is not me], timeout)

    def resume(self) -> None:
        """Undo `quiesce`: every task opens blocks again, those that were waiting first."""
        gate, self._gate, self._quiet_for = self._gate, None, None
        if gate is not None and not gate.done():
            gate.set_result(None)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the server answers a trivial query."""
        from sqlalchemy import text

        async with self.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def create_database(url_text: str, *, pool_size: int = 5, echo: bool = False, create: bool = True) -> Database:
    """A Database for the URL, nothing connected yet; an SQLite file is checked first, and must exist unless `create`."""
    url = parse_database_url(url_text)
    if url.drivername.startswith("mysql"):
        return Database(url, _mysql_engine(url, pool_size=pool_size, echo=echo))
    return Database(url, _sqlite_engine(url, echo=echo, create=create))


def _mysql_engine(url: URL, *, pool_size: int, echo: bool) -> AsyncEngine:
    query = dict(url.query)
    query.setdefault("charset", "utf8mb4")
    url = url.set(query=query)
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No ping at checkout and no ROLLBACK at return (a round trip each): a connection found dead on use is
        # invalidated with the rest of the pool and the caller's operation fails once, like any outage; every
        # SQLAlchemy connection already ends its own transaction when it closes.
        pool_pre_ping=False,
        pool_reset_on_return=None,
        pool_recycle=1800,
        pool_timeout=10,
        async_creator=mysql_connector(url),
    )


def mysql_connector(url: URL) -> Callable[[], Awaitable[Any]]:
    """An aiomysql connect whose TCP connect, handshake and login together end within CONNECT_TIMEOUT_S."""
    from sqlalchemy.dialects.mysql.aiomysql import dialect as aiomysql_dialect

    _, options = aiomysql_dialect().create_connect_args(url)

    async def connect() -> Any:
        import aiomysql
        import pymysql  # type: ignore[import-untyped]

        # aiomysql's connect_timeout covers only the TCP connect: a peer that accepts and never speaks
        # would hold the handshake forever.
        try:
            return await asyncio.wait_for(
                aiomysql.connect(**options, init_command=MYSQL_INIT, connect_timeout=CONNECT_TIMEOUT_S),
                CONNECT_TIMEOUT_S,
            )
        except TimeoutError:
            raise pymysql.err.OperationalError(
                _CONNECT_TIMED_OUT, f"no answer to connect and log in within {CONNECT_TIMEOUT_S} s"
            ) from None

    return connect


def _sqlite_engine(url: URL, *, echo: bool, create: bool) -> AsyncEngine:
    path = Path(url.database or "")
    if path.exists():
        check_sqlite_file(path)
    elif not create:
        raise SchemaError(f"the SQLite database {path.absolute()} does not exist; "
                          "`aifarm run` or `aifarm db upgrade` creates it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create the directory of the SQLite database {path}: {exc.strerror}") from None
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so two writers wait for each other (busy_timeout)
        # instead of failing when a read lock cannot be upgraded.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def mysql_error_code(exc: BaseException) -> int | None:
    """The MySQL error number inside a SQLAlchemy/DBAPI exception, if any."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_connection_error(exc: DBAPIError) -> bool:
    """True when the error means the database cannot be reached or opened, not that a statement failed."""
    code = mysql_error_code(exc)
    if code in _UNREACHABLE or code in _ACCESS_DENIED or code == _UNKNOWN_DATABASE:
        return True
    if getattr(exc, "connection_invalidated", False) or isinstance(exc, InterfaceError):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return "unable to open database" in text or "can't connect" in text


def describe_connect_error(exc: DBAPIError, url: URL) -> Exception:
    """A one-line domain error for a failure to reach or log in to the database."""
    where = f"{url.host}:{url.port or 3306}" if url.drivername.startswith("mysql") else str(url.database)
    code = mysql_error_code(exc)
    if code in _ACCESS_DENIED:
        return DatabaseUnavailable(f"the database at {where} refused the login of user {url.username!r} (wrong password or no grant)")
    if code == _UNKNOWN_DATABASE:
        return SchemaError(f"database {url.database!r} does not exist on {where}; create it with `aifarm db upgrade`")
    if code in _UNREACHABLE or code is None and url.drivername.startswith("mysql"):
        return DatabaseUnavailable(f"cannot reach the database server at {where}: {_first_line(exc)}")
    if url.drivername.startswith("sqlite"):
        return DatabaseUnavailable(f"cannot open the SQLite database {where}: {_first_line(exc)}")
    return DatabaseUnavailable(f"database error at {where}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    args: tuple[Any, ...] = getattr(orig, "args", ())
    text = str(args[1]) if len(args) > 1 else str(orig)
    return text.splitlines()[0] if text else type(orig).__name__
