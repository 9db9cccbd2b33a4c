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
from app.scheduling import service
from app.textui import to_json
from app.web import schemas
from app.web.keys import CACHE_KEY, DEPS_KEY, LIVE_KEY
from app.web.live import Event
from app.web.openapi import Handler, Operation, build_openapi


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=to_json)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError, LookupError):  # bad JSON or UTF-8, a >4300-digit number, deep nesting, unknown charset
        raise ValidationError("the request body is not valid JSON", {"body": "not valid JSON"}) from None


def _task_id(request: web.Request) -> int:
    # not ASCII digits, or beyond a BIGINT: no task has that id
    return schemas.parse_path(schemas.TaskPath, request.match_info, web.HTTPNotFound).task_id


async def status(request: web.Request) -> web.Response:
    """This agent's summary."""
    return _json(request.app[DEPS_KEY].describe())


async def peers(request: web.Request) -> web.Response:
    """Peers seen on the LAN and manually, verified or not; other farms; clients not seen on the LAN."""
    return _json(request.app[DEPS_KEY].peers_view())


async def list_tasks(request: web.Request) -> web.Response:
    """A page of tasks: ?status=&type=&sort=priority|newest|oldest&limit=&offset=."""
    deps = request.app[DEPS_KEY]
    query = schemas.parse_query(schemas.TaskListQuery, request.query)
    async with deps.db.connect() as conn:
        rows, total = await task_queries.list_tasks(conn, status=query.status, type=query.type, sort=query.sort,
                                                    limit=query.limit, offset=query.offset)
    capacities = await request.app[CACHE_KEY].get("capacities", lambda: service.active_capacities(deps.db))
    waiting = service.why_pending_with(rows, capacities)
    for row in rows:
        row["waiting_for"] = waiting.get(row["id"])
    return _json({"tasks": rows, "total": total, "limit": query.limit, "offset": query.offset})


async def create_task(request: web.Request) -> web.Response:
    """Submit a task (the same validator as `aifarm submit`); 201 with the task."""
    deps = request.app[DEPS_KEY]
    row = await service.submit(deps.db, await _body(request), deps.catalog, deps.client_id,
                               farm_name=deps.settings.farm_name, dataset_dirs=deps.settings.dataset_dirs)
    return _json(row, status=201)


async def get_task(request: web.Request) -> web.Response:
    """One task with its run state, ranks and why it waits."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    task = await service.get(deps.db, task_id)
    async with deps.db.connect() as conn:
        task["assignments"] = await assignment_queries.list_for_task(conn, task_id)
        task["available_ranks"] = await assignment_queries.available_ranks(conn, task_id)
    return _json(task)


async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a pending or running task."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    await service.cancel(deps.db, task_id, deps.client_id)
    return _json(await service.get(deps.db, task_id))


async def retry_task(request: web.Request) -> web.Response:
    """Re-queue a failed or errored task."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    await service.retry(deps.db, task_id, deps.client_id)
    return _json(await service.get(deps.db, task_id))


async def set_priority(request: web.Request) -> web.Response:
    """Change a task's priority: {"priority": N}."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    body = schemas.parse_body(schemas.PriorityBody, await _body(request))
    await service.set_priority(deps.db, task_id, body.priority)
    return _json(await service.get(deps.db, task_id))


async def pause(request: web.Request) -> web.Response:
    """Pause donating: {"seconds": optional, "finish_current": bool}."""
    deps = request.app[DEPS_KEY]
    body = schemas.parse_body(schemas.PauseBody, await _body(request) if request.can_read_body else {})
    await deps.donation.pause(seconds=body.seconds, finish_current=body.finish_current)
    return _json(deps.donation.state())


async def resume(request: web.Request) -> web.Response:
    """Resume donating."""
    deps = request.app[DEPS_KEY]
    await deps.donation.resume()
    return _json(deps.donation.state())


async def task_curve(request: web.Request) -> web.Response:
    """Training-curve points after ?after=ID: [{id, step, name, value}]."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    query = schemas.parse_query(schemas.CurveQuery, request.query)
    async with deps.db.connect() as conn:
        points = await metric_queries.curve(conn, task_id, query.after)
    return _json({"points": points})


async def task_logs(request: web.Request) -> web.Response:
    """The newest task_logs lines (?limit=)."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    query = schemas.parse_query(schemas.LogsQuery, request.query)
    async with deps.db.connect() as conn:
        rows = await log_queries.recent_task_logs(conn, task_id, query.limit)
    return _json({"logs": rows})


async def task_checkpoints(request: web.Request) -> web.Response:
    """Every checkpoint of a task, newest first."""
    deps = request.app[DEPS_KEY]
    async with deps.db.connect() as conn:
        rows = await checkpoint_queries.list_for_task(conn, _task_id(request))
    return _json({"checkpoints": rows})


async def list_clients(request: web.Request) -> web.Response:
    """Every client with its active task count (the seed's active-clients query for active ones)."""
    query = schemas.parse_query(schemas.ClientListQuery, request.query)
    page = await client_page(request.app[DEPS_KEY].db, query.limit, query.offset)
    return _json({"clients": page.clients, "total": page.total, "limit": page.limit, "offset": page.offset})


async def get_client(request: web.Request) -> web.Response:
    """One client, its last-hour performance (the seed's query and the series behind it) and its log."""
    client_id = schemas.parse_path(schemas.ClientPath, request.match_info, web.HTTPNotFound).client_id
    detail = await client_detail(request.app[DEPS_KEY].db, client_id)
    return _json({key: detail[key] for key in ("client", "performance", "series", "logs")})


async def list_models(request: web.Request) -> web.Response:
    """Model versions, newest first per name."""
    deps = request.app[DEPS_KEY]
    query = schemas.parse_query(schemas.ModelListQuery, request.query)
    async with deps.db.connect() as conn:
        rows = await model_queries.list_versions(conn, query.name, limit=query.limit, offset=query.offset)
        total = await model_queries.count_versions(conn, query.name)
    return _json({"models": rows, "total": total, "limit": query.limit, "offset": query.offset})


async def stats(request: web.Request) -> web.Response:
    """Tasks and clients by status, and the seed's completion statistics by type."""
    deps = request.app[DEPS_KEY]

    async def read() -> dict[str, Any]:
        async with deps.db.connect() as conn:
            return {"tasks_by_status": await task_queries.count_by_status(conn),
                    "clients_by_status": await client_queries.count_by_status(conn),
                    "by_type": await task_queries.completion_statistics(conn)}

    # Every viewer within the cache's second shares one reading (three scans of the farm's history).
    return _json(await request.app[CACHE_KEY].get("stats", read))


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `state` (agent, counts, peers) every 2 s, and `task` for ?task=ID (row, ranks,
    new curve points and log lines), from the agent's one live feed. Browsers reconnect by themselves."""
    feed = request.app[LIVE_KEY]
    watched = schemas.parse_query(schemas.EventsQuery, request.query).task
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
    """The OpenAPI 3.1 description of this API, made from its routes and models."""
    return web.json_response(build_openapi(request.app.router, OPERATIONS))


async def reload_prefs(request: web.Request) -> web.Response:
    """Re-read the settings files after `aifarm prefs set`."""
    deps = request.app[DEPS_KEY]
    await deps.donation.reload_settings()
    return _json(deps.donation.state())


async def shutdown(request: web.Request) -> web.Response:
    """Stop this agent cleanly, as Ctrl-C does (what `aifarm stop` calls); answers before it stops."""
    deps = request.app[DEPS_KEY]
    asyncio.get_running_loop().call_soon(deps.request_shutdown)
    return _json({"stopping": True, "pid": os.getpid()})


async def login_link(request: web.Request) -> web.Response:
    """A new one-time sign-in link for the browser (what `aifarm dashboard` and the tray open)."""
    return _json({"url": request.app[DEPS_KEY].login_url()})


PAGE_ERRORS = (400, 401, 503)
TASK_CHANGE_ERRORS = (401, 403, 404, 409)
OPERATIONS: dict[Handler, Operation] = {
    status: Operation("This agent", response=schemas.AgentStatus),
    peers: Operation("Peers on the LAN, other farms, clients not seen"),
    stats: Operation("Counts and completion statistics", errors=(401, 503)),
    list_tasks: Operation("A page of tasks", PAGE_ERRORS, query=schemas.TaskListQuery, response=schemas.TaskList),
    create_task: Operation("Submit a task (validated as `aifarm submit` validates a task file)", (400, 401, 403, 503),
                           body=schemas.TaskSubmission, response=schemas.Task, status=201),
    get_task: Operation("One task with ranks", (401, 404, 503), path=schemas.TaskPath, response=schemas.TaskDetail),
    cancel_task: Operation("Cancel", TASK_CHANGE_ERRORS, path=schemas.TaskPath, response=schemas.Task),
    retry_task: Operation("Retry", TASK_CHANGE_ERRORS, path=schemas.TaskPath, response=schemas.Task),
    set_priority: Operation("Change priority", (400, 401, 403, 404), path=schemas.TaskPath, body=schemas.PriorityBody,
                            response=schemas.Task),
    task_curve: Operation("Training curve points", (400, 401, 404), path=schemas.TaskPath, query=schemas.CurveQuery),
    task_logs: Operation("Newest log lines", (400, 401, 404), path=schemas.TaskPath, query=schemas.LogsQuery),
    task_checkpoints: Operation("Checkpoints", (401, 404), path=schemas.TaskPath),
    list_clients: Operation("A page of clients with contributions", PAGE_ERRORS, query=schemas.ClientListQuery),
    get_client: Operation("One client, its performance and log", (401, 404), path=schemas.ClientPath),
    list_models: Operation("A page of model versions", PAGE_ERRORS, query=schemas.ModelListQuery),
    pause: Operation("Pause donating", (400, 401, 403), body=schemas.PauseBody, body_required=False,
                     response=schemas.DonationState),
    resume: Operation("Resume donating", (401, 403), response=schemas.DonationState),
    login_link: Operation("A one-time sign-in link", (401, 403), response=schemas.LoginLink),
    shutdown: Operation("Stop this agent (answers before it stops)", (401, 403), response=schemas.Stopping),
    reload_prefs: Operation("Re-read the settings files", (401, 403), response=schemas.DonationState),
    events: Operation("Server-sent events (state, task)", (400, 401), query=schemas.EventsQuery, stream=True),
    openapi: Operation("This description"),
}


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
