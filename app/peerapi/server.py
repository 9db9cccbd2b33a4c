"""The peer API server: a second aiohttp site on the LAN address; every request must be signed with the farm secret."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from app.files import inside, safe_relative
from app.peerapi import auth
from app.peerapi.members import Membership
from app.peerapi.probe import probe

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PeerDeps:
    """What the peer API is given by the agent: its data dir, the farm secret, its status, and verified fetching."""

    data_dir: Path
    farm_secret: Callable[[], str | None]
    peer_status: Callable[[], dict[str, Any]]
    fetch: Callable[[str | None, str, str], Awaitable[Path | None]]


PEER_DEPS_KEY: web.AppKey[PeerDeps] = web.AppKey("peer_deps")
MEMBERS_KEY: web.AppKey[Membership] = web.AppKey("peer_members")
NONCES_KEY: web.AppKey[auth.NonceCache] = web.AppKey("peer_nonces")


class ServedShards:
    """How many times this agent's peer API served each dataset shard ('NAME/VERSION/SHARD')."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str) -> None:
        """Count one response."""
        self.counts[key] = self.counts.get(key, 0) + 1


SERVED_KEY: web.AppKey[ServedShards] = web.AppKey("peer_served_shards")
MAX_REQUEST_BYTES = 1 << 20
CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
DATASET_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unauthorized(message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": "unauthorized", "message": message, "fields": {}}},
        status=401,
        headers={"WWW-Authenticate": auth.SCHEME},
    )


@web.middleware
async def require_farm_signature(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 unless the request carries a fresh, unused HMAC signature of its method, path and body, made with
    this farm's secret by an active client of the farm."""
    deps = request.app[PEER_DEPS_KEY]
    secret = deps.farm_secret()
    if secret is None:
        return web.json_response(
            {"error": {"code": "not_ready", "message": "this agent has no farm secret yet", "fields": {}}}, status=503
        )
    header = request.headers.get("Authorization")
    if not auth.well_formed(header):
        return _unauthorized("missing or invalid farm signature")
    body = await request.read()  # within client_max_size, else 413
    signed = auth.verify(secret, header, request.method, request.path_qs, body)
    if signed is None:
        return _unauthorized("missing or invalid farm signature")
    if not await request.app[MEMBERS_KEY].is_member(signed.client_id):
        log.info("peer API: refused %s %s from %s (not an active client of this farm)",
                 request.method, request.path, signed.client_id)
        return _unauthorized("unknown or inactive client")
    admission = request.app[NONCES_KEY].admit(signed)
    if admission == "replay":
        log.warning("peer API: refused a replayed request %s %s from %s", request.method, request.path, signed.client_id)
        return _unauthorized("replayed request")
    if admission == "full":
        return web.json_response(
            {"error": {"code": "busy", "message": "too many signed requests; retry shortly", "fields": {}}}, status=503
        )
    log.debug("peer API %s %s from %s", request.method, request.path, signed.client_id)
    return await handler(request)


async def status(request: web.Request) -> web.Response:
    """Who this agent is and where it listens, and how often it served each dataset shard."""
    return web.json_response({**request.app[PEER_DEPS_KEY].peer_status(),
                              "dataset_shards_served": dict(request.app[SERVED_KEY].counts)})


SERVED_ROOTS = ("checkpoints", "models", "fetched")


async def get_file(request: web.Request) -> web.StreamResponse:
    """A checkpoint or model file of this agent's data dir (its own, or a verified copy it holds under fetched/);
    nothing outside those folders, no traversal."""
    deps = request.app[PEER_DEPS_KEY]
    relative = request.match_info["path"]
    root = relative.split("/", 1)[0]
    if root not in SERVED_ROOTS:
        raise web.HTTPNotFound(reason="not a served file")
    path = safe_relative(deps.data_dir, relative)
    if path is None:
        raise web.HTTPBadRequest(reason="invalid file name")
    # A symlink inside the folder may point anywhere: serve only what really lies in it.
    if not inside(path, deps.data_dir / root) or not path.is_file():
        raise web.HTTPNotFound(reason="no such file")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


BUNDLE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_!-]{0,99}$")


async def get_bundle(request: web.Request) -> web.StreamResponse:
    """The wheel of a bundle this agent holds (published here, or fetched and verified); the caller checks its sha256
    against the signed manifest."""
    deps = request.app[PEER_DEPS_KEY]
    name, version = request.match_info["name"], request.match_info["version"]
    if not BUNDLE_PART.match(name) or not BUNDLE_PART.match(version):
        raise web.HTTPBadRequest(reason="invalid bundle name or version")
    folder = deps.data_dir / "bundles" / "wheels" / f"{name}-{version}"
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    path = found[0] if len(found) == 1 else folder / "none.whl"
    if not inside(path, folder) or not path.is_file():
        raise web.HTTPNotFound(reason="no such bundle here")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def get_dataset_shard(request: web.Request) -> web.StreamResponse:
    """A shard of a published dataset this agent holds (DATA_DIR/datasets/published/NAME/VERSION/SHARD)."""
    deps = request.app[PEER_DEPS_KEY]
    name, version, shard = (request.match_info[k] for k in ("name", "version", "shard"))
    if not DATASET_PART.match(name) or not version.isdigit() or len(version) > 9 or not DATASET_PART.match(shard):
        raise web.HTTPBadRequest(reason="invalid dataset or shard name")
    root = deps.data_dir / "datasets" / "published"
    path = root / name / str(int(version)) / shard
    if not inside(path, root) or not path.is_file():
        raise web.HTTPNotFound(reason="no such shard")
    key = f"{name}/{int(version)}/{shard}"
    request.app[SERVED_KEY].add(key)
    log.info("peer API: served dataset shard %s", key)
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def replicate(request: web.Request) -> web.Response:
    """Fetch a model file from the peer that asks, verify its sha256, and keep a copy."""
    deps = request.app[PEER_DEPS_KEY]
    try:
        body = await request.json()
    except (ValueError, RecursionError, LookupError):  # bad JSON or UTF-8, huge numbers, deep nesting, unknown charset
        raise web.HTTPBadRequest(reason="body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="expected a JSON object with client_id, path (models/...) and sha256")
    owner, relative, sha256 = body.get("client_id"), body.get("path"), body.get("sha256")
    if not isinstance(owner, str) or not CLIENT_ID.match(owner):
        raise web.HTTPBadRequest(reason="client_id must be a client id")
    if not isinstance(relative, str) or not relative.startswith("models/") \
            or safe_relative(deps.data_dir, relative) is None:
        raise web.HTTPBadRequest(reason="path must name a file under models/")
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise web.HTTPBadRequest(reason="sha256 must be 64 lower-case hex digits")
    if not await request.app[MEMBERS_KEY].is_member(owner):
        raise web.HTTPBadRequest(reason="client_id is not an active client of this farm")
    path = await deps.fetch(owner, relative, sha256)
    if path is None:
        return web.json_response({"ok": False, "error": "could not fetch or verify the file"}, status=502)
    return web.json_response({"ok": True})


class RequestErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The HTTP server's error log: one line for a malformed request, a traceback only for a real fault."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """Log a request error; malformed requests (aiohttp's parse errors) without a traceback."""
        error = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(error, (HttpProcessingError, web.HTTPException)):
            self.logger.warning("peer API: malformed request from %s: %s", args[0] if args else "?", _one_line(error))
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        """Debug messages; a malformed request (non-HTTP bytes on the port) in one line."""
        if isinstance(exc_info, (HttpProcessingError, web.HTTPException)):
            self.logger.debug("peer API: malformed request from %s: %s", args[0] if args else "?", _one_line(exc_info))
            return
        self.logger.debug(msg, *args, exc_info=exc_info, **kwargs)


def _one_line(error: BaseException) -> str:
    text = error.message if isinstance(error, HttpProcessingError) and error.message else str(error)
    flat = " ".join(str(text).split())
    reason = flat.split(": b'", 1)[0].split(': b"', 1)[0]  # the parser quotes the offending bytes: not logged
    return reason.rstrip(" ^")[:200] or type(error).__name__


def create_peer_app(deps: PeerDeps, members: Membership) -> web.Application:
    """The peer API application; callers must be active clients of the farm according to `members`."""
    app = web.Application(middlewares=[require_farm_signature], client_max_size=MAX_REQUEST_BYTES,
                          handler_args={"logger": RequestErrorLog(log, {})})
    app[PEER_DEPS_KEY] = deps
    app[MEMBERS_KEY] = members
    app[NONCES_KEY] = auth.NonceCache()
    app[SERVED_KEY] = ServedShards()
    app.router.add_get("/peer/v1/status", status)
    app.router.add_get("/peer/v1/files/{path:.+}", get_file)
    app.router.add_get("/peer/v1/datasets/{name}/{version}/{shard}", get_dataset_shard)
    app.router.add_post("/peer/v1/replicate", replicate)
    app.router.add_get("/peer/v1/bundles/{name}/{version}", get_bundle)
    app.router.add_get("/peer/v1/probe/{size}", probe)
    return app
