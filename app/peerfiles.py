"""Files held by other agents: where to reach a client's peer API, and one verified download into this data dir.

Checkpoints, models and replicas all come through here; `aifarm models pull` uses the same endpoint lookup and
the same signed, sha256-checked download (app/peerapi/client.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.db.engine import Database
from app.db.queries import clients as client_queries
from app.discovery.registry import PeerRegistry
from app.files import safe_relative, sha256_file
from app.peerapi.client import PeerClient, PeerError

EventSink = Callable[[str, str], None]


def registered_endpoints(row: dict[str, Any] | None, own_hostname: str) -> list[tuple[str, int]]:
    """Where an active client's peer API listens, best first, from its registered session (none if inactive)."""
    if row is None or row.get("status") != "active":
        return []
    session = row.get("session_info") if isinstance(row.get("session_info"), dict) else {}
    port = session.get("peer_port") if session else None
    addresses = [a["ip"] for a in (session or {}).get("addresses", []) if isinstance(a, dict) and a.get("ip")]
    if not isinstance(port, int) or not port or not addresses:
        return []
    ordered = sorted(addresses, key=lambda ip: ip.startswith("127."))  # a LAN address first, loopback last
    if row.get("hostname") == own_hostname:
        ordered = ["127.0.0.1"] + [ip for ip in ordered if ip != "127.0.0.1"]
    return [(ip, port) for ip in ordered]


class PeerFiles:
    """Verified local copies of files that this or another agent of the farm wrote."""

    def __init__(self, data_dir: Path, client_id: str, hostname: str, db: Database, registry: PeerRegistry,
                 client: PeerClient, events: EventSink) -> None:
        self.data_dir = data_dir
        self.client_id = client_id
        self.hostname = hostname
        self.db = db
        self.registry = registry
        self.client = client
        self.events = events

    async def endpoint(self, client_id: str) -> tuple[str, int] | None:
        """Where to reach a client's peer API: the LAN registry, else its registered session."""
        state = self.registry.get(client_id)
        if state is not None and state.verified:
            return state.peer.endpoint()
        async with self.db.connect() as conn:
            row = await client_queries.get_client(conn, client_id)
        found = registered_endpoints(row, self.hostname)
        return found[0] if found else None

    def local_path(self, owner_id: str | None, relative: str) -> Path | None:
        """Where a file of `owner_id` lives here: in place when it is ours, else its copy under fetched/OWNER/."""
        if owner_id == self.client_id:
            return safe_relative(self.data_dir, relative)
        return safe_relative(self.data_dir, f"fetched/{owner_id}/{relative}")  # the id is checked too

    async def fetch(self, owner_id: str | None, relative: str, sha256: str) -> Path | None:
        """A verified local copy of a file (fetched from its owner's peer API when remote), or None."""
        if not relative or len(sha256) != 64:
            return None
        path = self.local_path(owner_id, relative)
        if path is None:
            return None
        if path.exists():
            if await asyncio.to_thread(sha256_file, path) == sha256:
                return path
            self.events("warning", f"{relative} does not match its sha256 (file altered?); refused")
            if owner_id == self.client_id:
                return None
        if owner_id == self.client_id or owner_id is None:
            return None
        endpoint = await self.endpoint(owner_id)
        if endpoint is None:
            return None
        try:
            await self.client.download(endpoint[0], endpoint[1], f"/peer/v1/files/{relative}", path, sha256)
        except PeerError as exc:
            self.events("warning", f"cannot fetch {relative} from {owner_id}: {exc}")
            return None
        return path

    async def fetch_bundle(self, owners: list[str], name: str, version: str, sha256: str, dest: Path) -> str | None:
        """A bundle's wheel from the first of `owners` that holds it, saved to dest when its sha256 matches;
        returns that owner, or None."""
        for owner in owners:
            endpoint = await self.endpoint(owner)
            if endpoint is None:
                continue
            try:
                await self.client.download(endpoint[0], endpoint[1], f"/peer/v1/bundles/{name}/{version}", dest, sha256)
            except PeerError as exc:
                self.events("warning", f"cannot fetch bundle {name}=={version} from {owner}: {exc}")
                continue
            return owner
        return None
