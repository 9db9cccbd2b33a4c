"""Schema versions: upgrade with alembic, and refuse to work on a schema that is not the current one."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.engine import Database, describe_connect_error, is_connection_error, mysql_connector, mysql_error_code
from app.db.revisions import current_revision, head_revision, known_revisions
from app.errors import SchemaError
from app.paths import migrations_dir

__all__ = ["current_revision", "ensure_current", "head_revision", "known_revisions", "open_current_database", "upgrade"]

log = logging.getLogger(__name__)

UPGRADE_HINT = "aifarm db upgrade"


def _config(connection: Any = None) -> Any:
    from alembic.config import Config  # imported only to upgrade: checking a schema needs no alembic

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


async def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str]:
    """Create or upgrade the schema (creating the MySQL database itself if missing); returns (before, after)."""
    if db.dialect == "mysql":
        await _create_mysql_database_if_missing(db)
    before = await current_revision(db)
    if before is not None and before not in known_revisions():
        raise SchemaError(
            f"the database is at schema revision {before}, which this version of AI Farm does not know; "
            "upgrade AI Farm"
        )

    def run(sync_conn: Any) -> None:
        from alembic import command

        command.upgrade(_config(sync_conn), revision)

    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(run)
            await conn.commit()
    except (OperationalError, ProgrammingError) as exc:
        if is_connection_error(exc):
            raise describe_connect_error(exc, db.url) from None
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise SchemaError(f"the schema upgrade from revision {before or 'empty'} failed and was stopped: {reason}") from None
    after = await current_revision(db)
    assert after is not None
    return before, after


async def ensure_current(db: Database) -> str:
    """Return the current revision, or raise SchemaError naming the command that fixes the schema."""
    head = head_revision()
    try:
        current = await current_revision(db)
    except SchemaError:
        raise
    if current is None:
        raise SchemaError(f"the database at {db.display_url} has no AI Farm schema; run `{UPGRADE_HINT}`")
    if current == head:
        return current
    if current in known_revisions():
        raise SchemaError(
            f"the database schema is at revision {current}, this version needs {head}; run `{UPGRADE_HINT}`"
        )
    raise SchemaError(
        f"the database schema is at revision {current}, newer than this version of AI Farm knows ({head}); "
        "upgrade AI Farm"
    )


async def _create_mysql_database_if_missing(db: Database) -> None:
    try:
        await db.ping()
        return
    except SchemaError:
        pass  # unknown database: create it below
    name = db.url.database
    assert name
    url = db.url
    server_url = URL.create(url.drivername, url.username, url.password, url.host, url.port, None, url.query)
    server = create_async_engine(server_url, async_creator=mysql_connector(server_url))
    try:
        async with server.connect() as conn:
            quoted = "`" + name.replace("`", "``") + "`"
            await conn.execute(
                text(f"CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET = utf8mb4 COLLATE = utf8mb4_general_ci")
            )
            await conn.commit()
            log.info("created database %s", name)
    except (OperationalError, ProgrammingError) as exc:
        raise SchemaError(
            f"database {name!r} does not exist and could not be created ({mysql_error_code(exc)}): "
            "ask the server's administrator to create it"
        ) from None
    finally:
        await server.dispose()


async def open_current_database(url: str, *, pool_size: int = 5) -> Database:
    """A Database that answers and is at the current schema revision; raises a one-line domain error otherwise."""
    from app.db.engine import create_database

    db = create_database(url, pool_size=pool_size, create=False)
    try:
        await ensure_current(db)
    except BaseException:
        await db.dispose()
        raise
    return db
