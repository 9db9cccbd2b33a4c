"""The dashboard's JSON API under /api/v1/ (a bearer token is required; see middlewares.api_auth)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from app.client_service import client_detail, client_page
from app.db.queries import assignments as assignment_queries
from app.db.queries import checkpoints as checkpoint_queries
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.db.queries import models as model_queries
from app.db.queries import tasks as task_queries
from app.errors import ValidationError
from app.ids import MAX_ID, parse_id, parse_int
from app.scheduling import service
from app.statuses import TASK_STATUSES
from app.textui import to_json
from app.web.keys import AGENT_KEY, CACHE_KEY, LIVE_KEY
from app.web.live import Event

MAX_PAGE = 200


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=to_json)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError, LookupError):  # bad JSON or UTF-8, a >4300-digit number, deep nesting, unknown charset
        raise ValidationError("the request body is not valid JSON", {"body": "not valid JSON"}) from None


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    value = parse_int(text.strip(), -MAX_ID, MAX_ID)
    if value is None:
        raise ValidationError(f"query parameter {name} must be a whole number", {name: "must be a whole number"})
    if not low <= value <= high:
        raise ValidationError(f"query parameter {name} must be between {low} and {high}", {name: f"must be between {low} and {high}"})
    return value


def _task_id(request: web.Request) -> int:
    task_id = parse_id(request.match_info["task_id"])
    if task_id is None:  # not ASCII digits, or beyond a BIGINT: no task has that id
        raise web.HTTPNotFound()
    return task_id


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
    if status_filter and status_filter not in TASK_STATUSES:
        named = f"{', '.join(TASK_STATUSES[:-1])} or {TASK_STATUSES[-1]}"
        raise ValidationError("unknown status filter", {"status": f"must be {named}"})
    sort = request.query.get("sort", "priority")
    if sort not in task_queries.TASK_SORTS:
        raise ValidationError("unknown sort", {"sort": f"must be one of {', '.join(task_queries.TASK_SORTS)}"})
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    async with agent.db.connect() as conn:
        rows, total = await task_queries.list_tasks(conn, status=status_filter, type=request.query.get("type") or None,
                                                    sort=sort, limit=limit, offset=offset)
    capacities = await request.app[CACHE_KEY].get("capacities", lambda: service.active_capacities(agent.db))
    waiting = service.why_pending_with(rows, capacities)
    for row in rows:
        row["waiting_for"] = waiting.get(row["id"])
    return _json({"tasks": rows, "total": total, "limit": limit, "offset": offset})


async def create_task(request: web.Request) -> web.Response:
    """Submit a task (the same validator as `aifarm submit`); 201 with the task."""
    agent = request.app[AGENT_KEY]
    row = await service.submit(agent.db, await _body(request), agent.catalog, agent.client_id,
                               farm_name=agent.settings.farm_name, dataset_dirs=agent.settings.dataset_dirs)
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


async def task_curve(request: web.Request) -> web.Response:
    """Training-curve points after ?after=ID: [{id, step, name, value}]."""
    agent = request.app[AGENT_KEY]
    task_id = _task_id(request)
    after = _int_param(request, "after", 0, 0, 2**62)
    async with agent.db.connect() as conn:
        points = await metric_queries.curve(conn, task_id, after)
    return _json({"points": points})


async def task_logs(request: web.Request) -> web.Response:
    """The newest task_logs lines (?limit=)."""
    agent = request.app[AGENT_KEY]
    task_id = _task_id(request)
    limit = _int_param(request, "limit", 200, 1, 1000)
    async with agent.db.connect() as conn:
        rows = await log_queries.recent_task_logs(conn, task_id, limit)
    return _json({"logs": rows})


async def task_checkpoints(request: web.Request) -> web.Response:
    """Every checkpoint of a task, newest first."""
    agent = request.app[AGENT_KEY]
    async with agent.db.connect() as conn:
        rows = await checkpoint_queries.list_for_task(conn, _task_id(request))
    return _json({"checkpoints": rows})


async def list_clients(request: web.Request) -> web.Response:
    """Every client with its active task count (the seed's active-clients query for active ones)."""
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    page = await client_page(request.app[AGENT_KEY].db, limit, offset)
    return _json({"clients": page.clients, "total": page.total, "limit": page.limit, "offset": page.offset})


async def get_client(request: web.Request) -> web.Response:
    """One client, its last-hour performance (the seed's query and the series behind it) and its log."""
    detail = await client_detail(request.app[AGENT_KEY].db, request.match_info["client_id"])
    return _json({key: detail[key] for key in ("client", "performance", "series", "logs")})


async def list_models(request: web.Request) -> web.Response:
    """Model versions, newest first per name."""
    agent = request.app[AGENT_KEY]
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    name = request.query.get("name") or None
    async with agent.db.connect() as conn:
        rows = await model_queries.list_versions(conn, name, limit=limit, offset=offset)
        total = await model_queries.count_versions(conn, name)
    return _json({"models": rows, "total": total, "limit": limit, "offset": offset})


async def stats(request: web.Request) -> web.Response:
    """Tasks and clients by status, and the seed's completion statistics by type."""
    agent = request.app[AGENT_KEY]
    async with agent.db.connect() as conn:
        return _json({"tasks_by_status": await task_queries.count_by_status(conn),
                      "clients_by_status": await client_queries.count_by_status(conn),
                      "by_type": await task_queries.completion_statistics(conn)})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `state` (agent, counts, peers) every 2 s, and `task` for ?task=ID (row, ranks,
    new curve points and log lines), from the agent's one live feed. Browsers reconnect by themselves."""
    feed = request.app[LIVE_KEY]
    task_id = request.query.get("task")
    watched = int(task_id) if task_id and task_id.isascii() and task_id.isdigit() and len(task_id) <= 18 else None
    async with sse_response(request, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}) as response:
        with feed.subscribe(watched) as subscription:
            await response.send("", retry=2000)
            if watched is not None:
                first = await feed.catch_up(watched)
                if first is None:
                    return response  # the database is away: the browser reconnects and tries again
                await _send(response, first)
            try:
                async for event in subscription.events():
                    await _send(response, event)
            except (ConnectionResetError, RuntimeError):
                pass
    return response


async def _send(response: EventSourceResponse, event: Event) -> None:
    await response.send(to_json(event.data).replace("\n", ""), event=event.name)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API."""
    from app.web.openapi import build_openapi

    return web.json_response(build_openapi())


async def reload_prefs(request: web.Request) -> web.Response:
    """Re-read the settings files after `aifarm prefs set`."""
    agent = request.app[AGENT_KEY]
    await agent.reload_settings()
    return _json(agent.donation_state())


async def shutdown(request: web.Request) -> web.Response:
    """Stop this agent cleanly, as Ctrl-C does (what `aifarm stop` calls); answers before it stops."""
    agent = request.app[AGENT_KEY]
    asyncio.get_running_loop().call_soon(agent.request_shutdown)
    return _json({"stopping": True, "pid": os.getpid()})


async def login_link(request: web.Request) -> web.Response:
    """A new one-time sign-in link for the browser (what `aifarm dashboard` and the tray open)."""
    return _json({"url": request.app[AGENT_KEY].login_url()})


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
    app.router.add_post("/api/v1/login-link", login_link, name="api_login_link")
    app.router.add_post("/api/v1/shutdown", shutdown, name="api_shutdown")
    app.router.add_post("/api/v1/prefs/reload", reload_prefs, name="api_prefs_reload")
    app.router.add_get("/api/v1/tasks/{task_id}/curve", task_curve, name="api_task_curve")
    app.router.add_get("/api/v1/tasks/{task_id}/logs", task_logs, name="api_task_logs")
    app.router.add_get("/api/v1/tasks/{task_id}/checkpoints", task_checkpoints, name="api_task_checkpoints")
    app.router.add_get("/api/v1/clients", list_clients, name="api_clients")
    app.router.add_get("/api/v1/clients/{client_id}", get_client, name="api_client")
    app.router.add_get("/api/v1/models", list_models, name="api_models")
    app.router.add_get("/api/v1/stats", stats, name="api_stats")
    app.router.add_get("/api/v1/events", events, name="api_events")
    app.router.add_get("/api/v1/openapi.json", openapi, name="api_openapi")
