"""A second copy of every model this machine registers: one verified peer is asked to fetch and keep it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.db.engine import Database
from app.db.queries import models as model_queries
from app.discovery.registry import PeerRegistry
from app.peerapi.client import PeerClient, PeerError

log = logging.getLogger(__name__)

EventSink = Callable[[str, str], None]


class Replicator:
    """Asks one verified peer to copy a new model (it pulls the file and checks its sha256), then records the replica."""

    def __init__(self, db: Database, client_id: str, registry: PeerRegistry, client: PeerClient, events: EventSink) -> None:
        self.db = db
        self.client_id = client_id
        self.registry = registry
        self.client = client
        self.events = events
        self._copies: set[asyncio.Task[str | None]] = set()

    def model_registered(self, name: str, version: str, relative: str, sha256: str) -> None:
        """Copy a new model to one other active peer, in the background."""
        task = asyncio.create_task(self.replicate(name, version, relative, sha256), name=f"replicate-{name}-{version}")
        self._copies.add(task)
        task.add_done_callback(self._copies.discard)

    async def replicate(self, name: str, version: str, relative: str, sha256: str) -> str | None:
        """The first verified peer that keeps a copy (recorded in the model's replicas), or None."""
        for state in self.registry.verified():
            endpoint = state.peer.endpoint()
            if endpoint is None:
                continue
            try:
                await self.client.post_json(endpoint[0], endpoint[1], "/peer/v1/replicate",
                                            {"client_id": self.client_id, "path": relative, "sha256": sha256})
            except PeerError as exc:
                self.events("warning", f"model {name} v{version}: copy to {state.peer.client_id} failed: {exc}")
                continue
            async with self.db.begin() as conn:
                row = await model_queries.get_version(conn, name, version)
                if row is not None:
                    await model_queries.add_replica(conn, row["id"], state.peer.client_id)
            self.events("info", f"model {name} v{version} copied to {state.peer.client_id}")
            return state.peer.client_id
        return None

    async def close(self) -> None:
        """Cancel copies still under way."""
        for task in list(self._copies):
            task.cancel()
        await asyncio.gather(*self._copies, return_exceptions=True)
