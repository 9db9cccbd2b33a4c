"""Discovery as the agent runs it: zeroconf, manual peers, database verification and reachability checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.db.engine import Database
from app.db.queries import clients as client_queries
from app.discovery.mdns import MdnsDiscovery
from app.discovery.peer import _CLIENT_ID, _FARM, Peer
from app.discovery.registry import PeerRegistry
from app.errors import DatabaseUnavailable
from app.netinfo import local_addresses, same_subnet
from app.peerapi.client import PeerClient, PeerError

log = logging.getLogger(__name__)

MANUAL_POLL_SECONDS = 10.0
REACH_CHECK_SECONDS = 15.0


class DiscoveryService:
    """Owns the mDNS adapter and the registry, and keeps the registry true."""

    def __init__(
        self,
        *,
        db: Database,
        registry: PeerRegistry,
        client: PeerClient,
        client_id: str,
        farm_name: str,
        version: str,
        manual_peers: tuple[str, ...],
        peer_port: Callable[[], int],
        verify_interval: float,
        use_mdns: bool = True,
    ) -> None:
        self.db = db
        self.registry = registry
        self.client = client
        self.client_id = client_id
        self.farm_name = farm_name
        self.version = version
        self.manual_peers = manual_peers
        self._peer_port = peer_port
        self.verify_interval = verify_interval
        self.use_mdns = use_mdns
        self.mdns: MdnsDiscovery | None = None
        self.reach: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        """Advertise and browse (a failure to use multicast is logged, manual peers still work)."""
        if not self.use_mdns:
            return
        self.mdns = MdnsDiscovery(
            client_id=self.client_id,
            farm_name=self.farm_name,
            version=self.version,
            peer_port=self._peer_port(),
            on_found=self.registry.found,
            on_lost=self.registry.lost,
        )
        try:
            await self.mdns.start()
        except OSError as exc:
            log.warning("zeroconf unavailable (%s); only manual peers (setting `peers`) will be found", exc)
            self.mdns = None

    async def stop(self) -> None:
        """Say goodbye on the LAN."""
        if self.mdns is not None:
            await self.mdns.stop()
            self.mdns = None

    async def verify_loop(self) -> None:
        """Check discovered peers against the clients table every verify_interval."""
        while True:
            try:
                await self.verify_once()
            except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
                log.debug("peer verification skipped: %s", exc)
            await asyncio.sleep(self.verify_interval)

    async def verify_once(self) -> None:
        """One verification pass: peers with an active clients row are verified."""
        async with self.db.connect() as conn:
            rows = await client_queries.get_clients(conn, self.registry.farm_peer_ids())
            active = await client_queries.list_clients(conn, status="active")
        others = [row for row in active if row["id"] != self.client_id]
        self.registry.apply_database(rows, others)

    async def manual_loop(self) -> None:
        """Ask each manual peer address who it is, so peers work where multicast does not."""
        while True:
            for address in self.manual_peers:
                host, _, port = address.rpartition(":")
                host = host.strip("[]")
                try:
                    status = await self.client.get_json(host, int(port), "/peer/v1/status")
                except PeerError as exc:
                    log.debug("manual peer %s: %s", address, exc)
                    continue
                peer = peer_from_status(status, host, int(port))
                if peer is not None:
                    self.registry.found(peer)
            self.registry.expire(3 * MANUAL_POLL_SECONDS, "manual")
            await asyncio.sleep(MANUAL_POLL_SECONDS)

    async def reach_loop(self) -> None:
        """Check that every verified peer's API answers us (new peers at once, all every REACH_CHECK_SECONDS)."""
        last_full = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - last_full >= REACH_CHECK_SECONDS:
                await self.check_reachability()
                last_full = loop.time()
            else:
                await self.check_reachability(only_new=True)
            await asyncio.sleep(1.0)

    async def check_reachability(self, only_new: bool = False) -> None:
        """One pass over the verified peers (or those never checked)."""
        own = local_addresses()
        for state in self.registry.verified():
            if only_new and state.reachable is not None:
                continue
            endpoint = state.peer.endpoint()
            if endpoint is None:
                continue
            try:
                await self.client.get_json(endpoint[0], endpoint[1], "/peer/v1/status")
            except PeerError as exc:
                error = f"{exc}. {reach_advice(state.peer, endpoint, own)}"
                self.registry.set_reachability(state.peer.client_id, False, error)
                self.reach[state.peer.client_id] = {"ok": False, "error": error}
            else:
                self.registry.set_reachability(state.peer.client_id, True, None)
                self.reach[state.peer.client_id] = {"ok": True}


def peer_from_status(status: dict[str, Any], host: str, port: int) -> Peer | None:
    """A manual Peer from a peer API status answer."""
    client_id, farm = status.get("client_id"), status.get("farm_name")
    if not isinstance(client_id, str) or not isinstance(farm, str):
        return None
    if not _CLIENT_ID.fullmatch(client_id) or not _FARM.fullmatch(farm):
        return None
    return Peer(
        client_id=client_id,
        farm_name=farm,
        version=str(status.get("version", "?"))[:50],
        addresses=(host,),
        peer_port=port,
        hostname=str(status.get("hostname", ""))[:255],
        source="manual",
    )


def reach_advice(peer: Peer, endpoint: tuple[str, int], own: list[Any]) -> str:
    """Concrete advice for a peer whose API we cannot reach."""
    host, port = endpoint
    who = peer.hostname or peer.client_id
    try:
        local = same_subnet(host, own)
    except ValueError:  # a host name from the `peers` setting, not an address
        return f"check that {host} resolves to {who}'s address and that it allows incoming TCP port {port}"
    if local is None:
        nets = ", ".join(f"{a.network} ({a.interface})" for a in own if not a.is_loopback) or "none"
        return (
            f"{who} advertised {host}, which is on none of this machine's subnets ({nets}); "
            f"connect both machines to one LAN, or set `peers = [\"<reachable address>:{port}\"]`"
        )
    return (
        f"on {who}, allow incoming TCP port {port} in its firewall "
        f"(it advertised {host}, reached through this machine's {local.interface} on {local.network})"
    )
