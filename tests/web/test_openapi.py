"""The OpenAPI document is made from the dashboard's router and the models its handlers parse with."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from app.scheduling.validation import CONFIG_FIELDS, REQUIRED_CONFIG
from app.web import api, schemas
from app.web.openapi import build_openapi
from tests.faults.test_fuzz import VALID_TASKS


async def _extra(request: web.Request) -> web.Response:
    """A route nobody described."""
    return web.json_response({})


@pytest.fixture
async def dashboard(tmp_path: Path, sqlite_url: str, aiohttp_client: Any) -> AsyncIterator[tuple[web.Application, TestClient[Any, Any]]]:
    """The real dashboard app of a real Agent (not started) on an upgraded SQLite file, plus one undescribed route."""
    from app.agent import Agent
    from app.config import load_settings
    from app.db.engine import create_database
    from app.db.migrate import upgrade
    from app.web.app import create_dashboard_app

    db = create_database(sqlite_url)
    await upgrade(db)
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "d")}, config_file=tmp_path / "none.toml")
    agent = Agent(settings, db)
    await agent.heartbeat.register()
    app = create_dashboard_app(agent._dashboard_deps())
    app.router.add_post("/api/v1/undescribed/{thing}", _extra)
    client = await aiohttp_client(app)
    client.session.headers["Authorization"] = f"Bearer {agent.api_token}"
    try:
        yield app, client
    finally:
        await db.dispose()


async def _document(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


async def test_every_api_route_is_in_the_document(dashboard: tuple[web.Application, TestClient[Any, Any]]) -> None:
    """Each method and path registered under /api/v1/, described or not, is an operation of a valid 3.1 document."""
    app, client = dashboard
    document = await _document(client)
    validate(document)
    registered = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
                  if route.resource is not None and route.resource.canonical.startswith("/api/v1/")
                  and route.method != "HEAD"}
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert registered - documented == set()
    assert {("post", "/api/v1/prefs/reload"), ("post", "/api/v1/shutdown"), ("post", "/api/v1/login-link")} <= documented
    extra = document["paths"]["/api/v1/undescribed/{thing}"]["post"]
    assert extra["summary"] == "A route nobody described."
    assert extra["parameters"] == [{"name": "thing", "in": "path", "required": True, "schema": {"type": "string"}}]


async def test_the_document_follows_the_models(dashboard: tuple[web.Application, TestClient[Any, Any]]) -> None:
    """A bound changed in a model is the bound in the document; the handler enforces the same one."""
    app, client = dashboard

    def limit_of(document: dict[str, Any]) -> dict[str, Any]:
        parameters = document["paths"]["/api/v1/tasks"]["get"]["parameters"]
        found: dict[str, Any] = next(p for p in parameters if p["name"] == "limit")
        return found

    served = limit_of(await _document(client))
    assert served["schema"]["maximum"] == schemas.MAX_PAGE and served["schema"]["minimum"] == 1
    over = await client.get(f"/api/v1/tasks?limit={schemas.MAX_PAGE + 1}")
    assert over.status == 400
    assert (await over.json())["error"]["fields"] == {"limit": f"must be between 1 and {schemas.MAX_PAGE}"}
    assert (await client.get(f"/api/v1/tasks?limit={schemas.MAX_PAGE}")).status == 200

    class NarrowQuery(schemas.TaskListQuery):
        limit: Annotated[int, schemas.WholeNumber(1, 7)] = 5

    narrowed = {**api.OPERATIONS, api.list_tasks: dataclasses.replace(api.OPERATIONS[api.list_tasks], query=NarrowQuery)}
    changed = limit_of(build_openapi(app.router, narrowed))
    assert changed["schema"]["maximum"] == 7 and changed["schema"]["default"] == 5


async def test_task_body_is_documented_from_the_validators_tables(
        dashboard: tuple[web.Application, TestClient[Any, Any]]) -> None:
    """The task body lists validate_task's config fields and required ones, and accepts every valid task."""
    _, client = dashboard
    document = await _document(client)
    components = document["components"]["schemas"]
    config = components["TaskConfig"]
    assert set(config["properties"]) == set(CONFIG_FIELDS) and set(config["required"]) == set(REQUIRED_CONFIG)
    assert config["properties"]["n_clients"]["maximum"] == CONFIG_FIELDS["n_clients"].maximum
    body = document["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    resolver = {"$ref": body["$ref"], "components": document["components"]}
    for task in VALID_TASKS:
        jsonschema.validate(task, resolver)


async def test_bad_input_names_the_field(dashboard: tuple[web.Application, TestClient[Any, Any]]) -> None:
    """Queries and bodies parsed by the models: a 400 error envelope naming each bad field."""
    _, client = dashboard
    cases: list[tuple[str, str, Any, dict[str, str]]] = [
        ("GET", "/api/v1/tasks?limit=%D9%A3", None, {"limit": "must be a whole number"}),
        ("GET", "/api/v1/tasks?status=bogus&sort=up", None,
         {"status": "must be pending, running, completed, failed or error", "sort": "must be priority, newest or oldest"}),
        ("GET", "/api/v1/events?task=abc", None, {"task": "must be a whole number"}),
        ("POST", "/api/v1/tasks/1/priority", {"priority": 5, "extra": 1}, {"extra": "unknown field"}),
        ("POST", "/api/v1/tasks/1/priority", {"priority": True}, {"priority": "must be a whole number"}),
        ("POST", "/api/v1/pause", {"seconds": 0, "finish_current": "yes"},
         {"seconds": "must be greater than 0", "finish_current": "must be true or false"}),
        ("POST", "/api/v1/pause", [], {"body": "must be a JSON object"}),
    ]
    for method, path, body, fields in cases:
        response = await client.request(method, path, json=body)
        answer = await response.json()
        assert response.status == 400, (path, answer)
        assert answer["error"]["code"] == "invalid" and answer["error"]["fields"] == fields, (path, answer)
        assert all(name in answer["error"]["message"] for name in fields), answer


async def test_answers_match_their_documented_schemas(dashboard: tuple[web.Application, TestClient[Any, Any]]) -> None:
    """Real answers (a created task, the task list, one task, this agent, pause, an error) fit the models the
    document names for them."""
    _, client = dashboard
    document = await _document(client)

    async def check(method: str, path: str, template: str, body: Any = None) -> Any:
        response = await client.request(method, path, json=body)
        answer = await response.json()
        schema = document["paths"][template][method.lower()]["responses"][str(response.status)]["content"]["application/json"]
        assert "$ref" in schema["schema"], f"{method} {template} {response.status} is not described by a model"
        jsonschema.validate(answer, {**schema["schema"], "components": document["components"]})
        return answer

    created = await check("POST", "/api/v1/tasks", "/api/v1/tasks", VALID_TASKS[0])
    assert isinstance(created["id"], int)
    listed = await check("GET", "/api/v1/tasks", "/api/v1/tasks")
    assert listed["total"] == 1
    await check("GET", f"/api/v1/tasks/{created['id']}", "/api/v1/tasks/{task_id}")
    await check("GET", "/api/v1/status", "/api/v1/status")
    await check("POST", "/api/v1/pause", "/api/v1/pause", {"seconds": 60})
    error = await check("POST", "/api/v1/tasks", "/api/v1/tasks", {"config": {}})
    assert error["error"]["code"] == "invalid"
