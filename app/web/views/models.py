"""The Models page: versions per name, and downloads verified against their sha256."""

from __future__ import annotations

import re
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from app.db.queries import clients as client_queries
from app.db.queries import models as model_queries
from app.errors import AifarmError, NotFound
from app.model_store import parse_url
from app.web.keys import DEPS_KEY
from app.web.pages import path_id

CONFIG_SHOWN = ("model", "dataset", "epochs", "batch_size", "learning_rate", "n_clients", "task_id")


def _owner(url: str) -> tuple[str | None, str | None]:
    try:
        location = parse_url(url)
    except AifarmError:
        return None, None
    return location.client_id, location.path


async def model_list(request: web.Request) -> web.Response:
    """Every model name with its versions: hash, owner, config and final metrics."""
    deps = request.app[DEPS_KEY]
    async with deps.db.connect() as conn:
        rows = await model_queries.list_versions(conn)
        owners = [row["url"].split("/")[2] for row in rows if str(row.get("url", "")).startswith("aifarm://")]
        replicas = [r for row in rows for r in ((row.get("config") or {}).get("replicas") or [])]
        hostnames = await client_queries.hostnames(conn, list(set(owners + replicas)))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        config = row["config"] if isinstance(row["config"], dict) else {}
        owner, path = _owner(row["url"])
        groups.setdefault(row["name"], []).append({
            **row, "cfg": config, "owner": owner, "path": path,
            "final_metrics": config.get("final_metrics") if isinstance(config.get("final_metrics"), dict) else {},
            "replicas": [r for r in config.get("replicas", []) if isinstance(r, str)] if isinstance(config.get("replicas"), list) else [],
            "shown": {k: config[k] for k in CONFIG_SHOWN if k in config},
        })
    return aiohttp_jinja2.render_template("models.html", request, {"groups": groups, "hostnames": hostnames,
                                                                   "own_id": deps.client_id})


def _filename(name: str, version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}-v{version}.pt")


async def download(request: web.Request) -> web.StreamResponse:
    """The model file, served only after its sha256 matched (local file, local replica, or fetched from its owner)."""
    deps = request.app[DEPS_KEY]
    model_id = path_id(request, "model_id")
    async with deps.db.connect() as conn:
        row = next((r for r in await model_queries.list_versions(conn) if r["id"] == model_id), None)
    if row is None:
        raise NotFound(f"model version {model_id} does not exist")
    owner, relative = _owner(row["url"])
    sha256 = (row["hash"] or "").lower()
    path = await deps.fetch_file(owner, relative, sha256) if owner and relative and len(sha256) == 64 else None
    if path is None:
        message = (f"No holder could deliver model {row['name']} v{row['version']} with its registered sha256: "
                   f"its owner {owner or 'unknown'} is not reachable or its copy does not match. "
                   "Try again when the owner's agent is running.")
        return aiohttp_jinja2.render_template("errors/error.html", request, {"status": 502, "message": message},
                                              status=502)
    return web.FileResponse(path, headers={
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{_filename(row["name"], row["version"])}"',
        "X-Content-SHA256": sha256,
    })
