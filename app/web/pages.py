"""The dashboard's HTML pages: routes, and the template filters they share."""

from __future__ import annotations

import json
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from app.ids import MAX_ID as DB_MAX_INT
from app.ids import parse_id, parse_int
from app.statuses import OPEN_TASK_STATUSES, TASK_STATUSES
from app.timefmt import absolute_time, duration, iso_time, relative_time


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
    value = parse_id(request.match_info[name])
    if value is None or value > MAX_ID:
        raise web.HTTPNotFound()
    return value


def int_or_none(text: str | None) -> int | None:
    """A whole number from a query or form value, or None."""
    return parse_int(text.strip(), -DB_MAX_INT, DB_MAX_INT) if isinstance(text, str) else None


def add_page_routes(app: web.Application) -> None:
    """Register every dashboard page, the template filters they use and the statuses they name."""
    from app.web.views import about, bundles, clients, models, operations, settings, tasks

    env = aiohttp_jinja2.get_env(app)
    env.filters.update({"iso_time": iso_time, "absolute_time": absolute_time, "relative_time": relative_time,
                        "duration": duration, "number": number, "megabytes": megabytes, "pretty_json": pretty_json})
    env.globals.update({"task_statuses": TASK_STATUSES, "open_task_statuses": OPEN_TASK_STATUSES})
    router = app.router
    router.add_get("/tasks", tasks.task_list, name="tasks")
    router.add_get("/tasks/new", tasks.new_task, name="task_new")
    router.add_post("/tasks/new", tasks.submit_task, name="task_submit")
    router.add_get(r"/tasks/{task_id:[0-9]+}", tasks.task_detail, name="task")
    router.add_post(r"/tasks/{task_id:[0-9]+}/cancel", tasks.cancel_task, name="task_cancel")
    router.add_post(r"/tasks/{task_id:[0-9]+}/retry", tasks.retry_task, name="task_retry")
    router.add_post(r"/tasks/{task_id:[0-9]+}/priority", tasks.set_priority, name="task_priority")
    router.add_get("/clients", clients.client_list, name="clients")
    router.add_get("/clients/{client_id}", clients.client_detail, name="client")
    router.add_get("/models", models.model_list, name="models")
    router.add_get(r"/models/{model_id:[0-9]+}/download", models.download, name="model_download")
    router.add_post(r"/models/{model_id:[0-9]+}/try", models.try_model, name="model_try")
    router.add_get("/operations", operations.operations_page, name="operations")
    router.add_get("/settings", settings.settings_page, name="settings")
    router.add_post("/settings/prefs", settings.save_prefs, name="settings_prefs")
    router.add_post("/settings/pause", settings.pause, name="settings_pause")
    router.add_post("/settings/resume", settings.resume, name="settings_resume")
    router.add_post("/settings/bundles/trust", bundles.trust, name="settings_bundles_trust")
    router.add_post("/settings/bundles/untrust", bundles.untrust, name="settings_bundles_untrust")
    router.add_get("/about", about.about_page, name="about")
