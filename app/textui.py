"""Plain-text output for the command line: tables, JSON and relative times."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc).isoformat() if value.tzinfo is None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    """JSON text with datetimes as ISO 8601 UTC."""
    return json.dumps(value, default=_default, indent=2, sort_keys=True)


def print_json(value: Any, out: TextIO = sys.stdout) -> None:
    """Print a value as JSON."""
    out.write(to_json(value) + "\n")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned with two spaces; None shows as '-'."""
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = ["  ".join(header.ljust(width) for header, width in zip(headers, widths)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def relative_time(when: datetime | None, now: datetime | None = None) -> str:
    """'12 s ago', '3 min ago', '2 h ago', '5 d ago' for a naive-UTC or aware datetime."""
    if when is None:
        return "never"
    now = now or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def format_duration(seconds: float | None) -> str:
    """'45 s', '12 min', '3.5 h' for a number of seconds."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
