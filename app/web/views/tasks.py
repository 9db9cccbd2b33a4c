"""The Tasks pages: the list, the submit form, one task with its live parts, and its actions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from app import elastic_view
from app.client_labels import client_labels
from app.db.queries import assignments as assignment_queries
from app.db.queries import checkpoints as checkpoint_queries
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import tasks as task_queries
from app.errors import Conflict, ValidationError
from app.ids import MAX_ID, parse_int
from app.scheduling import service
from app.scheduling.validation import CONFIG_FIELDS, TASK_TYPES, validate_task
from app.statuses import TASK_STATUSES
from app.web.keys import DEPS_KEY
from app.web.pages import int_or_none, path_id

PAGE_SIZE = 25
MAX_PAGE = 10**6
SORTS = {"priority": "Priority", "newest": "Newest first", "oldest": "Oldest first"}


@dataclass(frozen=True)
class FormField:
    """One input of the submit form: where its value goes in the task and how to read it."""

    name: str
    path: tuple[str, ...]
    kind: str  # "str", "int", "float", "bool", "interval", "json"
    label: str
    help: str = ""


def _config_help(name: str) -> str:
    return CONFIG_FIELDS[name].help if name in CONFIG_FIELDS else ""


MAIN_FIELDS = (
    FormField("name", ("config", "name"), "str", "Name", _config_help("name")),
    FormField("model", ("config", "model"), "str", "Model", _config_help("model")),
    FormField("dataset", ("config", "dataset"), "str", "Dataset", _config_help("dataset")),
    FormField("batch_size", ("config", "batch_size"), "int", "Batch size", _config_help("batch_size")),
    FormField("learning_rate", ("config", "learning_rate"), "float", "Learning rate", _config_help("learning_rate")),
    FormField("epochs", ("config", "epochs"), "int", "Epochs", _config_help("epochs")),
    FormField("distributed", ("config", "distributed"), "bool", "Distributed", _config_help("distributed")),
    FormField("n_clients", ("config", "n_clients"), "int", "Clients", _config_help("n_clients")),
    FormField("priority", ("priority",), "int", "Priority", "higher runs first (-1000 to 1000)"),
)
REQUIREMENT_FIELDS = (
    FormField("min_gpu_memory", ("requirements", "min_gpu_memory"), "int", "Min. GPU memory (MB)", "0: no GPU needed"),
    FormField("min_cpu_cores", ("requirements", "min_cpu_cores"), "int", "Min. CPU cores", ""),
    FormField("min_ram", ("requirements", "min_ram"), "int", "Min. RAM (MB)", ""),
)
ADVANCED_FIELDS = tuple(
    FormField(name, ("config", name), {"int": "int", "optional_int": "int", "float": "float", "str": "str",
                                       "interval": "interval", "optional_float": "float"}[CONFIG_FIELDS[name].kind],
              {"lr_schedule": "LR schedule"}.get(name, name.replace("_", " ").capitalize()), CONFIG_FIELDS[name].help)
    for name in ("optimizer", "lr_schedule", "momentum", "weight_decay", "seed", "validation_split",
                 "checkpoint_interval", "keep_checkpoints", "max_steps", "max_attempts", "precision",
                 "accumulate_steps", "grad_clip", "warmup_steps", "sync", "inner_steps", "outer_lr", "outer_momentum",
                 "compression")
)
OPTION_FIELDS = (
    FormField("model_options", ("config", "model_options"), "json", "Model options (JSON)", _config_help("model_options")),
    FormField("dataset_options", ("config", "dataset_options"), "json", "Dataset options (JSON)",
              _config_help("dataset_options")),
)
ALL_FIELDS = MAIN_FIELDS + REQUIREMENT_FIELDS + ADVANCED_FIELDS + OPTION_FIELDS
FIELD_NAMES = {f.name for f in ALL_FIELDS}
NEW_FORM_DEFAULTS = {"model": "mlp", "dataset": "synthetic", "batch_size": "32", "learning_rate": "0.001",
                     "epochs": "3", "n_clients": "1", "priority": "0"}


def _parse(field: FormField, text: str) -> Any:
    """The typed value of one input; text the validator will name as wrong when it does not parse."""
    if field.kind == "int":
        number = parse_int(text.strip(), -MAX_ID, MAX_ID)
        return text if number is None else number
    if field.kind == "float":
        try:
            value = float(text)
        except ValueError:
            return text
        return value if math.isfinite(value) else text
    if field.kind == "interval":
        number = parse_int(text, 0, MAX_ID)
        return text if number is None else number
    return text


def build_task(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The task dict from the form's inputs (empty inputs are left out), and JSON errors by field path."""
    task: dict[str, Any] = {"type": "training", "requirements": {}, "config": {}}
    json_errors: dict[str, str] = {}
    for field in ALL_FIELDS:
        if field.kind == "bool":
            task["config"][field.path[1]] = form.get(field.name) in ("on", "true", "1", "yes")
            continue
        text = (form.get(field.name) or "").strip()
        if not text:
            continue
        if field.kind == "json":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                json_errors[".".join(field.path)] = f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
                continue
            except (ValueError, RecursionError):  # a number of thousands of digits, or nesting too deep
                json_errors[".".join(field.path)] = "is not usable JSON (a number too long or nesting too deep)"
                continue
        else:
            value = _parse(field, text)
        target = task
        for key in field.path[:-1]:
            target = target[key]
        target[field.path[-1]] = value
    return task, json_errors


def field_errors(problems: dict[str, str]) -> tuple[dict[str, list[str]], list[str]]:
    """Validator problems by form input; those no input owns go in the second list."""
    by_field: dict[str, list[str]] = {}
    other: list[str] = []
    for path, message in problems.items():
        parts = path.split(".")
        if parts[0] in ("config", "requirements") and len(parts) > 1:
            name, rest = parts[1], parts[2:]
        else:
            name, rest = parts[0], parts[1:]
        if name in FIELD_NAMES:
            by_field.setdefault(name, []).append(f"{'.'.join(rest)}: {message}" if rest else message)
        else:
            other.append(f"{path}: {message}")
    return by_field, other


def _form_context(request: web.Request, values: dict[str, str], errors: dict[str, list[str]] | None = None,
                  other_errors: list[str] | None = None, message: str | None = None) -> dict[str, Any]:
    catalog = request.app[DEPS_KEY].catalog
    return {
        "values": values, "errors": errors or {}, "other_errors": other_errors or [], "message": message,
        "main_fields": MAIN_FIELDS, "requirement_fields": REQUIREMENT_FIELDS, "advanced_fields": ADVANCED_FIELDS,
        "option_fields": OPTION_FIELDS, "config_fields": CONFIG_FIELDS,
        "advanced_open": any(values.get(f.name) or (errors or {}).get(f.name) for f in ADVANCED_FIELDS),
        "models": sorted(catalog.models.values(), key=lambda r: r.name),
        "datasets": sorted(catalog.datasets.values(), key=lambda r: r.name),
    }


async def new_task(request: web.Request) -> web.Response:
    """The submit form, with sensible starting values."""
    return aiohttp_jinja2.render_template("task_new.html", request, _form_context(request, dict(NEW_FORM_DEFAULTS)))


async def submit_task(request: web.Request) -> web.StreamResponse:
    """Validate and submit; 303 to the new task, or the form again (400) with every error and every input kept."""
    deps = request.app[DEPS_KEY]
    posted = await request.post()
    values = {name: str(posted.get(name, "")) for name in FIELD_NAMES}
    values["distributed"] = "on" if posted.get("distributed") in ("on", "true", "1", "yes") else ""
    task, json_errors = build_task(values)
    try:
        if json_errors:
            policy = await service.source_policy(deps.db, deps.settings.farm_name, deps.settings.dataset_dirs)
            validate_task(task, deps.catalog, policy)  # collect the other problems too; nothing is written
            raise ValidationError("invalid task", json_errors)
        row = await service.submit(deps.db, task, deps.catalog, deps.client_id,
                                   farm_name=deps.settings.farm_name, dataset_dirs=deps.settings.dataset_dirs)
    except ValidationError as exc:
        # An option list that did not parse fell back to the defaults: what the validator says about those is noise.
        problems = {path: message for path, message in exc.fields.items()
                    if not any(path.startswith(bad + ".") for bad in json_errors)}
        problems.update(json_errors)
        errors, other = field_errors(problems or {"task": str(exc)})
        count = sum(len(v) for v in errors.values()) + len(other)
        message = f"The task was not submitted: {count} problem{'s' if count != 1 else ''} to fix."
        context = _form_context(request, values, errors, other, message)
        return aiohttp_jinja2.render_template("task_new.html", request, context, status=400)
    raise web.HTTPSeeOther(f"/tasks/{row['id']}")


def _query(base: dict[str, str], **changes: Any) -> str:
    merged = {**base, **{k: str(v) for k, v in changes.items()}}
    return "?" + urlencode({k: v for k, v in merged.items() if v not in ("", None)})


async def task_list(request: web.Request) -> web.Response:
    """Tasks with filters (status, type), sorting and pages; pending ones say why they wait."""
    deps = request.app[DEPS_KEY]
    status = request.query.get("status", "")
    if status and status not in TASK_STATUSES:
        raise ValidationError(f"unknown status {status!r}", {"status": f"must be one of {', '.join(TASK_STATUSES)}"})
    sort = request.query.get("sort", "priority")
    if sort not in SORTS:
        raise ValidationError(f"unknown sort {sort!r}", {"sort": f"must be one of {', '.join(SORTS)}"})
    task_type = request.query.get("type", "")
    page = min(MAX_PAGE, max(1, int_or_none(request.query.get("page")) or 1))
    async with deps.db.connect() as conn:
        rows, total = await task_queries.list_tasks(conn, status=status or None, type=task_type or None, sort=sort,
                                                    limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        counts = await task_queries.count_by_status(conn)
        types = sorted({*TASK_TYPES, *(r["type"] for r in await task_queries.completion_statistics(conn))})
    waiting = await service.why_pending(deps.db, rows)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    filters = {"status": status, "type": task_type, "sort": sort if sort != "priority" else ""}
    context = {
        "tasks": rows, "total": total, "waiting": waiting, "page": page, "pages": pages,
        "status": status, "task_type": task_type, "sort": sort, "sorts": SORTS, "statuses": TASK_STATUSES,
        "types": types, "counts": counts, "any_task": bool(sum(counts.values())),
        "prev_url": _query(filters, page=page - 1) if page > 1 else None,
        "next_url": _query(filters, page=page + 1) if page < pages else None,
    }
    return aiohttp_jinja2.render_template("tasks.html", request, context)


def _task_id(request: web.Request) -> int:
    return path_id(request, "task_id")


async def _detail_context(request: web.Request, task_id: int) -> dict[str, Any]:
    deps = request.app[DEPS_KEY]
    task = await service.get(deps.db, task_id)
    async with deps.db.connect() as conn:
        assignments = await assignment_queries.list_for_task(conn, task_id)
        available = await assignment_queries.available_ranks(conn, task_id)
        progress_rows = await assignment_queries.distributed_progress(conn, task_id)
        checkpoints = await checkpoint_queries.list_for_task(conn, task_id)
        logs = list(reversed(await log_queries.recent_task_logs(conn, task_id, 200)))
        ids = [a["client_id"] for a in assignments] + [c["client_id"] for c in checkpoints if c.get("client_id")]
        ids += [log_row["client_id"] for log_row in logs if log_row.get("client_id")]
        hostnames = client_labels(await client_queries.hostnames(conn, list(set(ids))))
        elastic = await elastic_view.read(conn, task, assignments)
    config = task["config"] if isinstance(task["config"], dict) else {}
    result = task["result"] if isinstance(task["result"], dict) else {}
    return {
        "task": task, "config": config, "result": result, "metrics": result.get("metrics") or {},
        "assignments": assignments, "available_ranks": available,
        "distributed": progress_rows[0] if progress_rows else None,
        "checkpoints": checkpoints, "logs": logs, "hostnames": hostnames, "action_error": None, "elastic": elastic,
    }


async def task_detail(request: web.Request) -> web.Response:
    """One task: status, progress, metrics, charts, ranks, checkpoints, log tail and actions."""
    context = await _detail_context(request, _task_id(request))
    return aiohttp_jinja2.render_template("task.html", request, context)


async def _after_action(request: web.Request, task_id: int, error: Exception | None, status: int) -> web.StreamResponse:
    if error is None:
        raise web.HTTPSeeOther(f"/tasks/{task_id}")
    context = await _detail_context(request, task_id)
    context["action_error"] = str(error)
    return aiohttp_jinja2.render_template("task.html", request, context, status=status)


async def cancel_task(request: web.Request) -> web.StreamResponse:
    """Cancel a pending or running task, then back to its page."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    try:
        await service.cancel(deps.db, task_id, deps.client_id)
    except Conflict as exc:
        return await _after_action(request, task_id, exc, 409)
    return await _after_action(request, task_id, None, 303)


async def retry_task(request: web.Request) -> web.StreamResponse:
    """Re-queue a failed or errored task, then back to its page."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    try:
        await service.retry(deps.db, task_id, deps.client_id)
    except Conflict as exc:
        return await _after_action(request, task_id, exc, 409)
    return await _after_action(request, task_id, None, 303)


async def set_priority(request: web.Request) -> web.StreamResponse:
    """Change a task's priority, then back to its page."""
    deps = request.app[DEPS_KEY]
    task_id = _task_id(request)
    text = str((await request.post()).get("priority", "")).strip()
    priority = parse_int(text, -MAX_ID, MAX_ID)
    if priority is None:
        return await _after_action(request, task_id, ValidationError(f"priority {text!r} is not a whole number"), 400)
    try:
        await service.set_priority(deps.db, task_id, priority)
    except (Conflict, ValidationError) as exc:
        return await _after_action(request, task_id, exc, 409 if isinstance(exc, Conflict) else 400)
    return await _after_action(request, task_id, None, 303)
