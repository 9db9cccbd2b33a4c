"""Finding and fetching model versions: `aifarm://CLIENT/PATH` URLs resolved through the clients table."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from app.db.engine import Database
from app.db.queries import clients as client_queries
from app.db.queries import farms as farm_queries
from app.db.queries import models as model_queries
from app.errors import AifarmError, NotFound
from app.files import publish_atomically
from app.peerapi import auth
from app.textui import BYTES, ProgressDisplay

SCHEME = "aifarm://"


@dataclass(frozen=True)
class Location:
    """Where one copy of a model file lives."""

    client_id: str
    path: str


def parse_url(url: str) -> Location:
    """The client and relative path of an aifarm:// URL."""
    if not url.startswith(SCHEME) or "/" not in url[len(SCHEME):]:
        raise AifarmError(f"{url!r} is not an aifarm:// model URL")
    client_id, path = url[len(SCHEME):].split("/", 1)
    return Location(client_id, path)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """NAME or NAME:VERSION."""
    name, _, version = ref.partition(":")
    return name, version or None


async def _endpoints(db: Database, client_ids: list[str]) -> list[tuple[str, str, int]]:
    out = []
    async with db.connect() as conn:
        for client_id in client_ids:
            row = await client_queries.get_client(conn, client_id)
            if row is None or row["status"] != "active":
                continue
            session = row["session_info"] or {}
            port = session.get("peer_port")
            addresses = [a.get("ip") for a in session.get("addresses", []) if isinstance(a, dict)]
            for ip in sorted(filter(None, addresses), key=lambda ip: ip.startswith("127.")):
                if port:
                    out.append((client_id, ip, int(port)))
    return out


async def pull(db: Database, ref: str, dest: Path | None, farm_name: str, client_id: str | None, *,
               progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Download a model version from its owner or a replica, verifying its sha256; returns (row, file).

    The request is signed as `client_id` (this machine's agent), which peers accept only while it is active."""
    name, version = parse_ref(ref)
    async with db.connect() as conn:
        row = await model_queries.get_version(conn, name, version)
        secret = await farm_queries.get_secret(conn, farm_name)
        member = client_id is not None and await client_queries.is_active_member(conn, client_id, farm_name)
    if row is None:
        raise NotFound(f"model {ref!r} does not exist (see `aifarm models`)")
    if secret is None:
        raise AifarmError(f"farm {farm_name!r} has no secret in this database; run an agent or `aifarm join` first")
    if not member or client_id is None:
        raise AifarmError(f"this machine's agent is not an active client of farm {farm_name!r}; peers serve files "
                          "only to active clients, so start it (`aifarm run`) and pull again")
    location = parse_url(row["url"])
    holders = [location.client_id] + [c for c in (row["config"] or {}).get("replicas", []) if c != location.client_id]
    dest = dest or Path(f"{name}-v{row['version']}.pt")
    errors = []
    for holder, host, port in await _endpoints(db, holders):
        # The owner serves the file where it wrote it; a replica keeps its verified copy under fetched/OWNER/.
        path = location.path if holder == location.client_id else f"fetched/{location.client_id}/{location.path}"
        try:
            await _download(host, port, f"/peer/v1/files/{path}", dest, row["hash"], secret, client_id, progress)
            return row, dest
        except AifarmError as exc:
            errors.append(f"{holder} at {host}:{port}: {exc}")
    raise AifarmError(f"no holder of model {name} v{row['version']} could deliver it"
                      + (": " + "; ".join(errors) if errors else " (none is active)"))


async def _download(host: str, port: int, path: str, dest: Path, sha256: str, secret: str, client_id: str,
                    progress: bool) -> None:
    headers = {"Authorization": auth.sign(secret, "GET", path, client_id)}
    tmp = dest.with_name(f".{dest.name}.part")
    digest, done = hashlib.sha256(), 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=60)) as session:
            async with session.get(f"http://{host}:{port}{path}", headers=headers) as response:
                if response.status != 200:
                    raise AifarmError(f"HTTP {response.status}")
                total = response.content_length or None
                with tmp.open("wb") as handle, ProgressDisplay(dest.name, total, BYTES, quiet=not progress) as shown:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        digest.update(chunk)
                        handle.write(chunk)
                        done += len(chunk)
                        shown.update(done)
        if digest.hexdigest() != sha256:
            raise AifarmError(f"the file does not match the registered sha256 {sha256[:12]}…; discarded")
        publish_atomically(tmp, dest)
    except aiohttp.ClientError as exc:
        raise AifarmError(f"download failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
