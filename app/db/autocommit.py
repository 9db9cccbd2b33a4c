"""One connection held open in autocommit mode, for a statement sent often on its own (the heartbeat): one round
trip each, without the pool's checkout ping, COMMIT and reset-on-return ROLLBACK."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import Database, describe_connect_error, is_connection_error

T = TypeVar("T")


class AutocommitConnection:
    """A held connection of a Database in AUTOCOMMIT mode, opened on first use and again after a connection error."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: AsyncConnection | None = None

    async def run(self, statement: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run one statement (committed by itself); a lost connection is dropped and the error raised as unavailable."""
        try:
            if self._conn is None or self._conn.closed:
                conn = await self.db.engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await statement(self._conn)
        except (OperationalError, InterfaceError) as exc:
            await self.close()
            if not is_connection_error(exc):
                raise
            raise describe_connect_error(exc, self.db.url) from exc

    async def close(self) -> None:
        """Give the connection back (invalidated if it broke)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except (OperationalError, InterfaceError, OSError):
                pass
