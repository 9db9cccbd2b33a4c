"""LinkMeter: the throughput and latency from this agent to each verified peer, measured now and then over the
peer API (a timed, signed transfer) when no task of this agent trains, and stored for the group former."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from app.db.engine import Database
from app.db.queries import links as link_queries
from app.discovery.registry import PeerRegistry
from app.peerapi.client import PeerClient, PeerError

log = logging.getLogger(__name__)

PROBE_BYTES = 4 << 20
LATENCY_TRIES = 3


@dataclass(frozen=True)
class Measured:
    """One measurement from this agent to a peer."""

    client_id: str
    mbit_per_s: float
    latency_ms: float


def link_figures(latencies: list[float], transfer_seconds: float, size: int) -> tuple[float, float]:
    """(Mbit/s, latency ms) from empty round trips and the time of a `size`-byte transfer."""
    latency = min(latencies)
    moving = max(transfer_seconds - latency, 1e-6)
    return size * 8 / moving / 1e6, latency * 1000


class LinkMeter:
    """Measures links to verified peers every `interval` seconds while `busy()` is false."""

    def __init__(self, db: Database, client_id: str, registry: PeerRegistry, client: PeerClient,
                 interval: Callable[[], float], busy: Callable[[], bool]) -> None:
        self.db = db
        self.client_id = client_id
        self.registry = registry
        self.client = client
        self.interval = interval
        self.busy = busy
        self.latest: dict[str, Measured] = {}

    def snapshot(self) -> list[dict[str, object]]:
        """The latest measurement to each peer, for `aifarm peers`."""
        return [asdict(m) for m in sorted(self.latest.values(), key=lambda m: m.client_id)]

    async def loop(self) -> None:
        """Measure, then wait about one interval; never while a task of this agent trains."""
        while True:
            await asyncio.sleep(self.interval() * random.uniform(0.8, 1.2))
            if not self.busy():
                await self.measure_all()

    async def measure_all(self) -> None:
        """One measurement to each verified peer, each stored as the link's latest."""
        for state in self.registry.verified():
            endpoint = state.peer.endpoint()
            if endpoint is None or self.busy():
                continue
            try:
                measured = await self.measure(state.peer.client_id, *endpoint)
            except PeerError as exc:
                log.info("link to %s not measured: %s", state.peer.client_id, exc)
                continue
            self.latest[measured.client_id] = measured
            async with self.db.begin() as conn:
                await link_queries.record(conn, self.client_id, measured.client_id, measured.mbit_per_s,
                                          measured.latency_ms)

    async def measure(self, client_id: str, host: str, port: int) -> Measured:
        """Empty round trips for the latency, then a few MB for the throughput."""
        latencies = [await self.client.probe(host, port, 0) for _ in range(LATENCY_TRIES)]
        transfer = await self.client.probe(host, port, PROBE_BYTES)
        mbit, latency_ms = link_figures(latencies, transfer, PROBE_BYTES)
        return Measured(client_id, mbit, latency_ms)
