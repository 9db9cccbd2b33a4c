"""Times as text, the same for the dashboard's pages and the command line (static/js/time.js mirrors it)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal


def as_utc(value: object) -> datetime | None:
    """A timezone-aware UTC datetime from a naive UTC datetime (the database's), an ISO text or Unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return as_utc(parsed)
    return None


def iso_time(value: object) -> str:
    """ISO 8601 UTC, for <time datetime>."""
    moment = as_utc(value)
    return moment.isoformat().replace("+00:00", "Z") if moment else ""


def absolute_time(value: object) -> str:
    """'2024-05-01 12:03:04 UTC'."""
    moment = as_utc(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def relative_time(value: object, now: datetime | None = None) -> str:
    """'12 s ago', '5 min ago', 'in 3 h', 'just now' under a second; '—' for no time."""
    moment = as_utc(value)
    if moment is None:
        return "—"
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    whole = int(abs(seconds))
    if whole == 0:
        return "just now"
    return f"in {duration(whole)}" if seconds < 0 else f"{duration(whole)} ago"


def duration(seconds: object) -> str:
    """A short human duration: '42 s', '5 min', '3 h 20 min', '2 d 4 h'; '—' for anything but a number."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, Decimal)):
        return "—"
    value = float(seconds)
    if value < 60:
        return f"{round(value, 1):g} s"
    total = int(value)
    if total < 3600:
        return f"{total // 60} min"
    if total < 86400:
        hours, minutes = divmod(total // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(total // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
