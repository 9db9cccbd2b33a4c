"""Database URL parsing: the accepted spellings, their async drivers, and redaction for display."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from app.errors import DatabaseUrlError

_DRIVERS = {
    "mysql": "mysql+aiomysql",
    "mysql+aiomysql": "mysql+aiomysql",
    "mysql+pymysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
    "mariadb+aiomysql": "mysql+aiomysql",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def parse_database_url(text: str) -> URL:
    """The async SQLAlchemy URL for a mysql://, mysql+aiomysql:// or sqlite:/// URL."""
    try:
        url = make_url(text.strip())
        _ = url.port  # a non-numeric port only fails when read
    except (ArgumentError, ValueError):
        raise DatabaseUrlError(
            f"database URL {redact_text(text)!r} is malformed; expected mysql://USER:PASSWORD@HOST[:PORT]/DATABASE "
            "or sqlite:///PATH"
        ) from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise DatabaseUrlError(
            f"database URL scheme {url.drivername!r} is not supported; use mysql:// (MySQL 8+/MariaDB 10.6+) or sqlite:///"
        )
    url = url.set(drivername=driver)
    if driver.startswith("mysql"):
        if not url.host and "unix_socket" not in url.query:
            raise DatabaseUrlError(f"database URL {redact_url(url)!r} names no host")
        if not url.database:
            raise DatabaseUrlError(f"database URL {redact_url(url)!r} names no database (…/ai_farm)")
        if url.port is not None and not 0 < url.port < 65536:
            raise DatabaseUrlError(f"database URL {redact_url(url)!r} has an invalid port")
    elif not url.database or url.database == ":memory:":
        raise DatabaseUrlError("an SQLite database URL must name a file: sqlite:///PATH")
    return url


def redact_url(url: URL | str) -> str:
    """The URL as text with its password replaced by ***."""
    if isinstance(url, str):
        text = url
        try:
            url = make_url(text)
            _ = url.port  # a malformed port only fails when read
        except (ArgumentError, ValueError):
            return redact_text(text)
    return url.render_as_string(hide_password=True)


def redact_text(text: str) -> str:
    """Best-effort password removal from a string that may not parse as a URL."""
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else text
