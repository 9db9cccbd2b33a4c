"""Query functions: each takes a connection, and the caller owns the transaction."""

from __future__ import annotations

from typing import Any, Unpack

from sqlalchemy.engine import Row


def row_dict(row: Row[Unpack[tuple[Any, ...]]]) -> dict[str, Any]:
    """A result row as a plain dict."""
    return dict(row._mapping)
