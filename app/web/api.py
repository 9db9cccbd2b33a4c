"""The dashboard's JSON API under /api/v1/ (a bearer token is required; see middlewares.api_auth)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from app.db.queries import assignments as assignment_queries
from app.db.queries import tasks as task_queries
from app.errors import ValidationError
from app.scheduling import service
from app.textui import to_json
from app.web.keys import AGENT_KEY

MAX_PAGE = 200


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=to_json)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationError("the request body is not valid JSON", {"body": "not valid JSON"}) from None


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValidationError(f"query parameter {name} must be a whole number", {name: "must be a whole number"}) from None
    if not low <= value <= high:
        raise ValidationError(f"query parameter {name} must be between {low} and {high}", {name: f"must be between {low} and {high}"})
    return value


def _task_id(request: web.Request) -> int:
    try:
        return int(request.match_info["task_id"])
    except ValueError:
        raise web.HTTPNotFound() from None


async def status(request: web.Request) -> web.Response:
    """This agent's summary."""
    return _json(request.app[AGENT_KEY].describe())


async def peers(request: web.Request) -> web.Response:
    """Peers seen on the LAN and manually, verified or not; other farms; clients not seen on the LAN."""
    return _json(request.app[AGENT_KEY].peers_view())


async def list_tasks(request: web.Request) -> web.Response:
    """A page of tasks: ?status=&type=&sort=priority|newest|oldest&limit=&offset=."""
    agent = request.app[AGENT_KEY]
    status_filter = request.query.get("status") or None
    if status_filter and status_filter not in ("pending", "running", "completed", "failed", "error"):
        raise ValidationError("unknown status filter", {"status": "must be pending, running, completed, failed or error"})
    sort = request.query.get("sort", "priority")
    if sort not in task_queries.TASK_SORTS:
        raise ValidationError("unknown sort", {"sort": f"must be one of {', '.join(task_queries.TASK_SORTS)}"})
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    async with agent.db.connect() as conn:
        rows, total = await task_queries.list_tasks(conn, status=status_filter, type=request.query.get("type") or None,
                                                    sort=sort, limit=limit, offset=offset)
    waiting = await service.why_pending(agent.db, rows)
    for row in rows:
        row["waiting_for"] = waiting.get(row["id"])
    return _json({"tasks": rows, "total": total, "limit": limit, "offset": offset})


async def create_task(request: web.Request) -> web.Response:
    """Submit a task (the same validator as `aifarm submit`); 201 with the task."""
    agent = request.app[AGENT_KEY]
    row = await service.submit(agent.db, await _body(request), agent.catalog, agent.client_id)
    return _json(row, status=201)


async def get_task(request: web.Request) -> web.Response:
    """One task with its run state, ranks and why it waits."""
    agent = request.app[AGENT_KEY]
    task_id = _task_id(request)
    task = await service.get(agent.db, task_id)
    async with agent.db.connect() as conn:
        task["assignments"] = await assignment_queries.list_for_task(conn, task_id)
        task["available_ranks"] = await assignment_queries.available_ranks(conn, task_id)
    return _json(task)


async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a pending or running task."""
    agent = request.app[AGENT_KEY]
    task_id = _task_id(request)
    await service.cancel(agent.db, task_id, agent.client_id)
    return _json(await service.get(agent.db, task_id))


async def retry_task(request: web.Request) -> web.Response:
    """Re-queue a failed or errored task."""
    agent = request.app[AGENT_KEY]
    task_id = _task_id(request)
    await service.retry(agent.db, task_id, agent.client_id)
    return _json(await service.get(agent.db, task_id))


async def set_priority(request: web.Request) -> web.Response:
    """Change a task's priority: {"priority": N}."""
    agent = request.app[AGENT_KEY]
    task_id = _task_id(request)
    body = await _body(request)
    if not isinstance(body, dict) or set(body) != {"priority"}:
        raise ValidationError("expected {\"priority\": N}", {"priority": "is required"})
    await service.set_priority(agent.db, task_id, body["priority"])
    return _json(await service.get(agent.db, task_id))


async def pause(request: web.Request) -> web.Response:
    """Pause donating: {"seconds": optional, "finish_current": bool}."""
    agent = request.app[AGENT_KEY]
    body = await _body(request) if request.can_read_body else {}
    if not isinstance(body, dict) or set(body) - {"seconds", "finish_current"}:
        raise ValidationError("expected {\"seconds\": N, \"finish_current\": bool}", {"body": "unknown fields"})
    seconds = body.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 366 * 86400):
        raise ValidationError("seconds must be a number between 0 and a year", {"seconds": "must be between 0 and 31622400"})
    finish = body.get("finish_current", False)
    if not isinstance(finish, bool):
        raise ValidationError("finish_current must be true or false", {"finish_current": "must be true or false"})
    await agent.pause(seconds=seconds, finish_current=finish)
    return _json(agent.donation_state())


async def resume(request: web.Request) -> web.Response:
    """Resume donating."""
    agent = request.app[AGENT_KEY]
    await agent.resume()
    return _json(agent.donation_state())


def add_routes(app: web.Application) -> None:
    """Register the API routes."""
    app.router.add_get("/api/v1/status", status, name="api_status")
    app.router.add_get("/api/v1/peers", peers, name="api_peers")
    app.router.add_get("/api/v1/tasks", list_tasks, name="api_tasks")
    app.router.add_post("/api/v1/tasks", create_task, name="api_create_task")
    app.router.add_get("/api/v1/tasks/{task_id}", get_task, name="api_task")
    app.router.add_post("/api/v1/tasks/{task_id}/cancel", cancel_task, name="api_cancel_task")
    app.router.add_post("/api/v1/tasks/{task_id}/retry", retry_task, name="api_retry_task")
    app.router.add_post("/api/v1/tasks/{task_id}/priority", set_priority, name="api_task_priority")
    app.router.add_post("/api/v1/pause", pause, name="api_pause")
    app.router.add_post("/api/v1/resume", resume, name="api_resume")
