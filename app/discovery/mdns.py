"""Zeroconf: advertise this agent as `_aifarm._tcp.local.` and browse for the others (one instance per process)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from app.discovery.peer import SERVICE_TYPE, Peer, peer_from_service
from app.netinfo import local_addresses

log = logging.getLogger(__name__)

# Short record TTLs so that a peer killed without a goodbye disappears within about a minute even
# before the database says so; a clean stop sends a goodbye and is gone at once.
RECORD_TTL_SECONDS = 30
RESOLVE_TIMEOUT_MS = 3000


class MdnsDiscovery:
    """Advertises this agent and reports peers found and lost through two callbacks (never blocking)."""

    def __init__(
        self,
        *,
        client_id: str,
        farm_name: str,
        version: str,
        peer_port: int,
        on_found: Callable[[Peer], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.client_id = client_id
        self.farm_name = farm_name
        self.version = version
        self.peer_port = peer_port
        self._on_found = on_found
        self._on_lost = on_lost
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._registration: asyncio.Future[bool] | None = None

    @property
    def service_name(self) -> str:
        """This agent's zeroconf instance name."""
        return f"{self.client_id}.{SERVICE_TYPE}"

    async def start(self) -> None:
        """Register our service and start browsing."""
        addresses = [a.ip for a in local_addresses() if not a.is_loopback] or ["127.0.0.1"]
        self._zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.service_name,
            port=self.peer_port,
            properties={
                "id": self.client_id,
                "farm": self.farm_name,
                "version": self.version,
                "peer_port": str(self.peer_port),
                "host": socket.gethostname()[:63],
            },
            server=f"{self.client_id}.local.",
            parsed_addresses=[a for a in addresses if ":" not in a],
            host_ttl=RECORD_TTL_SECONDS,
            other_ttl=RECORD_TTL_SECONDS,
        )
        await self._zc.zeroconf.async_wait_for_start()
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        # Registering probes the network for a name clash and announces, about 1.7 s: it goes on in the background,
        # so the agent's start does not wait for it (peers find us once it is done, as before).
        self._registration = asyncio.ensure_future(self._register(self._zc, self._info))

    async def _register(self, zc: AsyncZeroconf, info: AsyncServiceInfo) -> bool:
        try:
            await (await zc.async_register_service(info, allow_name_change=False))
        except Exception as exc:  # a name clash or a socket error: manual peers and the database still work
            log.warning("zeroconf could not advertise this agent: %s", exc)
            return False
        return True

    async def stop(self) -> None:
        """Send our goodbye, stop browsing, close the sockets."""
        for task in list(self._pending):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._zc is not None:
            advertised = self._registration is not None and self._registration.done() and self._registration.result()
            if self._registration is not None and not self._registration.done():
                self._registration.cancel()
            if self._info is not None and advertised:
                # The first await schedules the goodbye packets; the second waits until they are sent.
                await (await self._zc.async_unregister_service(self._info))
            await self._zc.async_close()
        self._zc = self._browser = self._info = None

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if name == self.service_name:
            return
        if state_change is ServiceStateChange.Removed:
            self._on_lost(name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _resolve(self, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            if not await info.async_request(self._zc.zeroconf, RESOLVE_TIMEOUT_MS):
                return
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("could not resolve %s: %s", name, exc)
            return
        peer = peer_from_service(name, dict(info.properties), info.parsed_addresses(), info.port, info.server)
        if peer is None:
            log.debug("ignoring malformed zeroconf record %s", name)
            return
        self._on_found(peer)

