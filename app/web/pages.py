"""The dashboard's HTML pages: routes, and the template filters they share."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

TASK_STATUSES = ("pending", "running", "completed", "failed", "error")


def as_utc(value: Any) -> datetime | None:
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


def iso_time(value: Any) -> str:
    """ISO 8601 UTC, for <time datetime>."""
    moment = as_utc(value)
    return moment.isoformat().replace("+00:00", "Z") if moment else ""


def absolute_time(value: Any) -> str:
    """'2024-05-01 12:03:04 UTC'."""
    moment = as_utc(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def relative_time(value: Any, now: datetime | None = None) -> str:
    """'12 s ago', '5 min ago', 'in 3 h'; '—' for no time."""
    moment = as_utc(value)
    if moment is None:
        return "—"
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    future = seconds < 0
    text = duration(int(abs(seconds)))
    if text == "0 s":
        return "just now"
    return f"in {text}" if future else f"{text} ago"


def duration(seconds: Any) -> str:
    """A short human duration: '42 s', '5 min', '3 h 20 min', '2 d 4 h'."""
    if seconds is None or isinstance(seconds, jinja2.Undefined):
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


def number(value: Any, digits: int = 4) -> str:
    """A metric value, compact: 0.1234, 12.3, 1,234; '—' for none."""
    if value is None or isinstance(value, (bool, jinja2.Undefined)):
        return "—"
    try:
        numeric = float(value)
    except (TypeError, ValueError):
        return str(value)
    if numeric != numeric:
        return "—"
    if numeric.is_integer() and abs(numeric) >= 1:
        return f"{int(numeric):,}"
    if abs(numeric) >= 100:
        return f"{numeric:,.1f}"
    return f"{numeric:.{digits}g}"


def megabytes(value: Any) -> str:
    """'512 MB', '15.6 GB'."""
    if value is None or isinstance(value, (bool, jinja2.Undefined)):
        return "—"
    mb = float(value)
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre> (escaped by the template like any other text)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


MAX_ID = 2**62  # beyond what the databases' integer columns hold


def path_id(request: web.Request, name: str) -> int:
    """A numeric id from the URL; 404 for one no row can have."""
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise web.HTTPNotFound()
    return value


def int_or_none(text: str | None) -> int | None:
    """A whole number from a query or form value, or None."""
    try:
        return int(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def add_page_routes(app: web.Application) -> None:
    """Register every dashboard page and the template filters they use."""
    from app.web.views import clients, models, operations, settings, tasks

    env = aiohttp_jinja2.get_env(app)
    env.filters.update({"iso_time": iso_time, "absolute_time": absolute_time, "relative_time": relative_time,
                        "duration": duration, "number": number, "megabytes": megabytes, "pretty_json": pretty_json})
    router = app.router
    router.add_get("/tasks", tasks.task_list, name="tasks")
    router.add_get("/tasks/new", tasks.new_task, name="task_new")
    router.add_post("/tasks/new", tasks.submit_task, name="task_submit")
    router.add_get(r"/tasks/{task_id:\d+}", tasks.task_detail, name="task")
    router.add_post(r"/tasks/{task_id:\d+}/cancel", tasks.cancel_task, name="task_cancel")
    router.add_post(r"/tasks/{task_id:\d+}/retry", tasks.retry_task, name="task_retry")
    router.add_post(r"/tasks/{task_id:\d+}/priority", tasks.set_priority, name="task_priority")
    router.add_get("/clients", clients.client_list, name="clients")
    router.add_get("/clients/{client_id}", clients.client_detail, name="client")
    router.add_get("/models", models.model_list, name="models")
    router.add_get(r"/models/{model_id:\d+}/download", models.download, name="model_download")
    router.add_get("/operations", operations.operations_page, name="operations")
    router.add_get("/settings", settings.settings_page, name="settings")
    router.add_post("/settings/prefs", settings.save_prefs, name="settings_prefs")
    router.add_post("/settings/pause", settings.pause, name="settings_pause")
    router.add_post("/settings/resume", settings.resume, name="settings_resume")
