"""The Models page: versions per name, downloads verified against their sha256, and a prompt box for language models."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from app.client_labels import client_labels
from app.db.queries import clients as client_queries
from app.db.queries import models as model_queries
from app.errors import AifarmError, NotFound
from app.model_store import parse_url
from app.web.keys import DEPS_KEY
from app.web.pages import path_id
from app.web.security import SECURITY_HEADERS

CONFIG_SHOWN = ("model", "dataset", "epochs", "batch_size", "learning_rate", "n_clients", "task_id")
LANGUAGE_MODELS = ("transformer", "char_lstm")
MAX_PROMPT_CHARS = 4000
MAX_TRY_TOKENS = 1000
TRY_TIMEOUT_S = 120.0


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
        hostnames = client_labels(await client_queries.hostnames(conn, list(set(owners + replicas))))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        config = row["config"] if isinstance(row["config"], dict) else {}
        owner, path = _owner(row["url"])
        groups.setdefault(row["name"], []).append({
            **row, "cfg": config, "owner": owner, "path": path,
            "final_metrics": config.get("final_metrics") if isinstance(config.get("final_metrics"), dict) else {},
            "replicas": [r for r in config.get("replicas", []) if isinstance(r, str)] if isinstance(config.get("replicas"), list) else [],
            "shown": {k: config[k] for k in CONFIG_SHOWN if k in config},
            "can_try": config.get("model") in LANGUAGE_MODELS and str(path or "").endswith(".safetensors"),
        })
    return aiohttp_jinja2.render_template("models.html", request, {"groups": groups, "hostnames": hostnames,
                                                                   "own_id": deps.client_id})


def _filename(name: str, version: str, suffix: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}-v{version}{suffix if suffix in ('.pt', '.safetensors') else '.pt'}")


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
        "Content-Disposition": f'attachment; filename="{_filename(row["name"], row["version"], path.suffix)}"',
        "X-Content-SHA256": sha256,
    })


async def _version(request: web.Request) -> dict[str, Any]:
    deps = request.app[DEPS_KEY]
    model_id = path_id(request, "model_id")
    async with deps.db.connect() as conn:
        row = next((r for r in await model_queries.list_versions(conn) if r["id"] == model_id), None)
    if row is None:
        raise NotFound(f"model version {model_id} does not exist")
    return row


def _try_input(form: Any) -> tuple[str, int, float]:
    """The prompt, token count and temperature of the try form; ValueError naming the field."""
    prompt = str(form.get("prompt") or "")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt: at most {MAX_PROMPT_CHARS} characters")
    try:
        tokens = int(str(form.get("max_tokens") or "200"))
        temperature = float(str(form.get("temperature") or "0.8"))
    except ValueError:
        raise ValueError("max_tokens and temperature must be numbers") from None
    if not 1 <= tokens <= MAX_TRY_TOKENS or not 0 <= temperature <= 100:
        raise ValueError(f"max_tokens must be 1 to {MAX_TRY_TOKENS} and temperature 0 to 100")
    return prompt, tokens, temperature


async def try_model(request: web.Request) -> web.StreamResponse:
    """A language model's answer to a prompt, streamed as it is generated by a separate process (torch stays out)."""
    deps = request.app[DEPS_KEY]
    row = await _version(request)
    try:
        prompt, tokens, temperature = _try_input(await request.post())
    except ValueError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    owner, relative = _owner(row["url"])
    sha256 = (row["hash"] or "").lower()
    path = await deps.fetch_file(owner, relative, sha256) if owner and relative and len(sha256) == 64 else None
    if path is None or path.suffix != ".safetensors":
        return web.Response(status=502, text=f"model {row['name']} v{row['version']} cannot be tried here: no "
                                             "verified safetensors copy could be had\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.training.try_model", str(path), f"--prompt={prompt}", f"--max-tokens={tokens}",
        f"--temperature={temperature}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    # Prepared here, before the middleware sees it: the hardening headers go on now.
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    try:
        await asyncio.wait_for(_relay(proc, response), TRY_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    await response.write_eof()
    return response


async def _relay(proc: asyncio.subprocess.Process, response: web.StreamResponse) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(256):
        await response.write(chunk)
