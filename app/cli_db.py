"""The farm database of one `aifarm` command: opened as the command needs it, disposed when the command is done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from app.db.engine import Database

# current: it answers and has this version's schema; reachable: it exists (an SQLite file is not created) and
# answers; any: nothing checked, an SQLite file is created when missing (for `db upgrade` and `db restore`).
Require = Literal["current", "reachable", "any"]


@asynccontextmanager
async def farm_database(url: str, *, require: Require = "current") -> AsyncIterator[Database]:
    """The database at `url`, checked as `require` says; its connections are closed on leaving, error or not."""
    # imported here: the handler modules import this one, and `aifarm --help` must not load SQLAlchemy
    from app.db.engine import create_database
    from app.db.migrate import open_current_database

    if require == "current":
        db = await open_current_database(url)
    else:
        db = create_database(url, create=require == "any")
    try:
        if require == "reachable":
            await db.ping()
        yield db
    finally:
        await db.dispose()
