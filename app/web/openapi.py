"""The OpenAPI 3.1 description of the dashboard API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from app import __version__
from app.statuses import TASK_STATUSES

ERROR = {"$ref": "#/components/schemas/Error"}
OBJECT = {"type": "object", "additionalProperties": True}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "Invalid input", 401: "Missing or wrong token", 403: "Forbidden", 404: "Not found",
             409: "Conflict with the task's state", 503: "Database unavailable"}
    return {str(code): _json(ERROR, names[code]) for code in codes}


def _task_id() -> dict[str, Any]:
    return {"name": "task_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TASK_INPUT: dict[str, Any] = {
    "type": "object",
    "required": ["config"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": ["training"]},
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "requirements": {"type": "object", "additionalProperties": False, "properties": {
            key: {"type": "integer", "minimum": 0} for key in ("min_gpu_memory", "min_cpu_cores", "min_ram")}},
        "config": {"type": "object", "description": "see the README's task fields",
                   "required": ["name", "model", "dataset", "batch_size", "learning_rate", "epochs", "distributed",
                                "n_clients"]},
    },
}


def build_openapi() -> dict[str, Any]:
    """The whole description."""
    page = [_query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size"),
            _query("offset", {"type": "integer", "minimum": 0}, "rows to skip")]
    paths: dict[str, Any] = {
        "/api/v1/status": {"get": {"summary": "This agent", "responses": {"200": _json(OBJECT), **_errors(401)}}},
        "/api/v1/peers": {"get": {"summary": "Peers on the LAN, other farms, clients not seen",
                                  "responses": {"200": _json(OBJECT), **_errors(401)}}},
        "/api/v1/stats": {"get": {"summary": "Counts and completion statistics",
                                  "responses": {"200": _json(OBJECT), **_errors(401, 503)}}},
        "/api/v1/tasks": {
            "get": {"summary": "A page of tasks", "parameters": [
                _query("status", {"type": "string", "enum": list(TASK_STATUSES)},
                       "filter by status"),
                _query("type", {"type": "string"}, "filter by type"),
                _query("sort", {"type": "string", "enum": ["priority", "newest", "oldest"]}, "order"), *page],
                "responses": {"200": _json({"type": "object", "required": ["tasks", "total", "limit", "offset"],
                                            "properties": {"tasks": {"type": "array", "items": OBJECT},
                                                           "total": {"type": "integer"}, "limit": {"type": "integer"},
                                                           "offset": {"type": "integer"}}}), **_errors(400, 401, 503)}},
            "post": {"summary": "Submit a task",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": TASK_INPUT}}},
                     "responses": {"201": _json(OBJECT, "Created"), **_errors(400, 401, 403, 503)}},
        },
        "/api/v1/tasks/{task_id}": {"get": {"summary": "One task with ranks", "parameters": [_task_id()],
                                            "responses": {"200": _json(OBJECT), **_errors(401, 404, 503)}}},
        "/api/v1/tasks/{task_id}/cancel": {"post": {"summary": "Cancel", "parameters": [_task_id()],
                                                    "responses": {"200": _json(OBJECT), **_errors(401, 403, 404, 409)}}},
        "/api/v1/tasks/{task_id}/retry": {"post": {"summary": "Retry", "parameters": [_task_id()],
                                                   "responses": {"200": _json(OBJECT), **_errors(401, 403, 404, 409)}}},
        "/api/v1/tasks/{task_id}/priority": {"post": {
            "summary": "Change priority", "parameters": [_task_id()],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["priority"], "additionalProperties": False,
                "properties": {"priority": {"type": "integer", "minimum": -1000, "maximum": 1000}}}}}},
            "responses": {"200": _json(OBJECT), **_errors(400, 401, 403, 404)}}},
        "/api/v1/tasks/{task_id}/curve": {"get": {"summary": "Training curve points", "parameters": [
            _task_id(), _query("after", {"type": "integer", "minimum": 0}, "only points after this id")],
            "responses": {"200": _json(OBJECT), **_errors(400, 401, 404)}}},
        "/api/v1/tasks/{task_id}/logs": {"get": {"summary": "Newest log lines", "parameters": [
            _task_id(), _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "lines")],
            "responses": {"200": _json(OBJECT), **_errors(400, 401, 404)}}},
        "/api/v1/tasks/{task_id}/checkpoints": {"get": {"summary": "Checkpoints", "parameters": [_task_id()],
                                                        "responses": {"200": _json(OBJECT), **_errors(401, 404)}}},
        "/api/v1/clients": {"get": {"summary": "A page of clients with contributions", "parameters": page,
                                    "responses": {"200": _json(OBJECT), **_errors(400, 401, 503)}}},
        "/api/v1/clients/{client_id}": {"get": {"summary": "One client, its performance and log", "parameters": [
            {"name": "client_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}],
            "responses": {"200": _json(OBJECT), **_errors(401, 404)}}},
        "/api/v1/models": {"get": {"summary": "A page of model versions", "parameters": [
            _query("name", {"type": "string"}, "one model name"), *page],
            "responses": {"200": _json(OBJECT), **_errors(400, 401)}}},
        "/api/v1/pause": {"post": {"summary": "Pause donating", "requestBody": {"required": False, "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": False, "properties": {
                "seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 31622400},
                "finish_current": {"type": "boolean"}}}}}},
            "responses": {"200": _json(OBJECT), **_errors(400, 401, 403)}}},
        "/api/v1/resume": {"post": {"summary": "Resume donating", "responses": {"200": _json(OBJECT), **_errors(401, 403)}}},
        "/api/v1/login-link": {"post": {"summary": "A one-time sign-in link",
                                        "responses": {"200": _json(OBJECT), **_errors(401, 403)}}},
        "/api/v1/events": {"get": {"summary": "Server-sent events (state, task)", "parameters": [
            _query("task", {"type": "integer", "minimum": 1}, "also stream this task")],
            "responses": {"200": {"description": "text/event-stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **_errors(401)}}},
        "/api/v1/openapi.json": {"get": {"summary": "This description", "responses": {"200": _json(OBJECT)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "AI Farm agent API", "version": __version__,
                 "description": "The local dashboard's API. Bearer token from DATA_DIR/api_token, or the browser "
                                "session cookie plus the X-CSRF-Token header for changes."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message", "fields"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
        },
    }
