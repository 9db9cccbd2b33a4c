"""The least-privilege MySQL/MariaDB account for agents: rows only (SELECT, INSERT, UPDATE, DELETE), no DDL, no GRANT."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from app.db.engine import Database, mysql_error_code
from app.db.queries import operations as ops
from app.errors import AifarmError, ValidationError

MAX_NAME = 32  # MySQL 8's limit on user names (MariaDB allows 80)
MAX_HOST = 255


def generate_password() -> str:
    """A random password (URL-safe characters, about 190 bits)."""
    return secrets.token_urlsafe(24)


def _check(kind: str, value: str, limit: int) -> None:
    if not value or len(value) > limit or not ops.ACCOUNT_PART.match(value):
        raise ValidationError(f"{kind} {value!r} is not allowed: use 1-{limit} letters, digits, '_', '-', '.' or '%'",
                              {kind: "letters, digits, _ - . % only"})


def agent_user_sql(name: str, host: str, database: str, password: str) -> list[str]:
    """The statements that create (or reset the password of) the agent account and grant it the farm's rows."""
    _check("name", name, MAX_NAME)
    _check("host", host, MAX_HOST)
    if not ops.DATABASE_NAME.match(database or ""):
        raise ValidationError(f"database name {database!r} is not allowed: use letters, digits, '_', '$' or '-'",
                              {"database": "letters, digits, _ $ - only"})
    if not password or "\\" in password or any(ord(ch) < 32 for ch in password):
        raise ValidationError("the password must be non-empty, without backslashes or control characters",
                              {"password": "no backslash or control characters"})
    return ops.agent_user_statements(name, host, database, password)


async def apply(admin_db: Database, statements: Sequence[str]) -> None:
    """Run the statements with an account that may create users and grant; errors never show the statements."""
    try:
        async with admin_db.begin() as conn:
            await ops.execute_statements(conn, statements)
    except DBAPIError as exc:
        orig = getattr(exc, "orig", exc)
        args: tuple[Any, ...] = getattr(orig, "args", ())
        reason = str(args[1]) if len(args) > 1 else type(orig).__name__
        # The server's message may quote the statement, which holds the password: name the error only.
        if "IDENTIFIED BY" in reason.upper():
            reason = "the server refused the statement"
        raise AifarmError(f"creating the agent account with {admin_db.display_url} failed "
                          f"({mysql_error_code(exc)}): {reason.splitlines()[0] if reason else ''}") from None


def agent_url(base: URL, name: str, password: str) -> str:
    """The database URL an agent uses with the new account (same server and database as base)."""
    scheme = "mysql" if base.drivername.startswith("mysql") else base.drivername
    query = {key: value for key, value in base.query.items() if key != "charset"}
    return URL.create(scheme, name, password, base.host, base.port, base.database, query).render_as_string(
        hide_password=False)
