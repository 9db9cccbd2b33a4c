"""The OpenAPI 3.1 document of the dashboard API (served at /api/v1/openapi.json), made from the router and the
models the handlers parse with: every route under /api/v1/ appears, described or not, so none can be missing."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from app import __version__
from app.web.schemas import Error

PREFIX = "/api/v1/"
REF = "#/components/schemas/{model}"
OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
ERROR_NAMES = {400: "Invalid input", 401: "Missing or wrong token", 403: "Forbidden", 404: "Not found",
               409: "Conflict with the task's state", 503: "Database unavailable"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operation:
    """What the document says of one route beyond its method and path: the models it parses and answers with."""

    summary: str
    errors: tuple[int, ...] = (401,)
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    response: type[BaseModel] | None = None
    status: int = 200
    stream: bool = False  # answers text/event-stream


class _Schemas:
    """Model schemas with their shared definitions gathered under components/schemas."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, model: type[BaseModel]) -> dict[str, Any]:
        """The model's JSON schema, its nested models referenced from components."""
        schema = model.model_json_schema(ref_template=REF)
        self.components.update(schema.pop("$defs", {}))
        return schema

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        """A reference to the model, kept in components."""
        self.components[model.__name__] = self.of(model)
        return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _parameters(schemas: _Schemas, model: type[BaseModel] | None, where: str, names: list[str]) -> list[dict[str, Any]]:
    if model is None:  # an undeclared path variable is still a required parameter
        return [{"name": name, "in": where, "required": True, "schema": {"type": "string"}} for name in names]
    schema = schemas.of(model)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        described = {key: value for key, value in prop.items() if key not in ("title", "description")}
        parameter = {"name": name, "in": where, "required": where == "path" or name in required, "schema": described}
        if "description" in prop:
            parameter["description"] = prop["description"]
        out.append(parameter)
    return out


def _operation(schemas: _Schemas, route: web.AbstractRoute, path: str, described: Operation | None) -> dict[str, Any]:
    doc = (route.handler.__doc__ or route.name or path).strip().splitlines()[0]
    op = described or Operation(summary=doc)
    names = re.findall(r"{(\w+)}", path)
    out: dict[str, Any] = {"summary": op.summary, "operationId": route.name or f"{route.method.lower()}_{path}"}
    parameters = _parameters(schemas, op.path, "path", names) if names else []
    if op.query is not None:
        parameters += _parameters(schemas, op.query, "query", [])
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": schemas.ref(op.body)}}}
    if op.stream:
        answer = {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    else:
        answer = _json(schemas.ref(op.response) if op.response else OBJECT, "Created" if op.status == 201 else "OK")
    error = schemas.ref(Error)
    out["responses"] = {str(op.status): answer, **{str(code): _json(error, ERROR_NAMES[code]) for code in op.errors}}
    return out


def build_openapi(router: web.UrlDispatcher, operations: Mapping[Handler, Operation]) -> dict[str, Any]:
    """The whole document: each route under /api/v1/ with its declared models, or a generic description."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if not path.startswith(PREFIX) or route.method in ("HEAD", "*"):
            continue
        described = operations.get(route.handler)
        paths.setdefault(path, {})[route.method.lower()] = _operation(schemas, route, path, described)
    return {
        "openapi": "3.1.0",
        "info": {"title": "AI Farm agent API", "version": __version__,
                 "description": "The local dashboard's API. Bearer token from DATA_DIR/api_token, or the browser "
                                "session cookie plus the X-CSRF-Token header for changes."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": dict(sorted(schemas.components.items()))},
    }
