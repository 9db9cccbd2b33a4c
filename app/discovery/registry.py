"""The peer registry: peers from zeroconf and manual addresses, checked against the database (the truth)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from app.discovery.peer import Peer, PeerState


class PeerRegistry:
    """Peers by client id; discovery events in, verified views and log events out. Not thread-safe: loop only."""

    def __init__(self, own_client_id: str, farm_name: str, clock: Callable[[], float] = time.time) -> None:
        self.own_client_id = own_client_id
        self.farm_name = farm_name
        self._clock = clock
        self._peers: dict[str, PeerState] = {}
        self._by_service: dict[str, str] = {}
        self._db_only: list[dict[str, Any]] = []
        self.events: deque[tuple[str, str]] = deque(maxlen=1000)
        self.lost_ids: deque[str] = deque(maxlen=1000)

    def found(self, peer: Peer) -> None:
        """A peer was seen (or seen again) by zeroconf or a manual address."""
        if peer.client_id == self.own_client_id:
            return
        now = self._clock()
        if peer.service_name:
            self._by_service[peer.service_name] = peer.client_id
        state = self._peers.get(peer.client_id)
        if state is None:
            self._peers[peer.client_id] = PeerState(peer=peer, first_seen=now, last_seen=now)
            where = ", ".join(peer.addresses)
            if peer.farm_name == self.farm_name:
                self.events.append(("info", f"peer {peer.client_id} joined ({peer.source}, {where}:{peer.peer_port})"))
            else:
                self.events.append(("info", f"agent {peer.client_id} of farm {peer.farm_name!r} seen on the LAN"))
            return
        if state.peer.source == "manual" and peer.source == "mdns":
            state.peer = peer
        elif state.peer.source == peer.source:
            state.peer = peer
        state.last_seen = now

    def lost(self, service_name_or_id: str) -> None:
        """A peer said goodbye or its records expired."""
        client_id = self._by_service.pop(service_name_or_id, service_name_or_id)
        state = self._peers.pop(client_id, None)
        if state is not None and state.peer.farm_name == self.farm_name:
            self.events.append(("info", f"peer {client_id} left"))
            self.lost_ids.append(client_id)

    def expire(self, older_than_seconds: float, source: str) -> None:
        """Drop peers of one source not seen for a while (manual peers that stopped answering)."""
        cutoff = self._clock() - older_than_seconds
        for client_id, state in list(self._peers.items()):
            if state.peer.source == source and state.last_seen < cutoff:
                self.lost(client_id)

    def farm_peer_ids(self) -> list[str]:
        """Client ids of peers that claim our farm."""
        return [cid for cid, state in self._peers.items() if state.peer.farm_name == self.farm_name]

    def apply_database(self, rows: Iterable[dict[str, Any]], active_ids_not_seen: list[dict[str, Any]]) -> None:
        """Mark peers verified when an active clients row with their id exists; remember DB-only clients."""
        status = {row["id"]: row["status"] for row in rows}
        for client_id, state in self._peers.items():
            state.db_status = status.get(client_id)
            was = state.verified
            state.verified = state.peer.farm_name == self.farm_name and state.db_status == "active"
            if state.verified and not was:
                self.events.append(("info", f"peer {client_id} verified against the database"))
        self._db_only = [row for row in active_ids_not_seen if row["id"] not in self._peers]

    def set_reachability(self, client_id: str, reachable: bool, error: str | None) -> bool:
        """Record whether we can reach a peer's API; True when that changed."""
        state = self._peers.get(client_id)
        if state is None:
            return False
        changed = state.reachable != reachable
        state.reachable, state.reach_error = reachable, error
        if changed and not reachable:
            self.events.append(("warning", f"cannot reach peer {client_id}: {error}"))
        elif changed and reachable:
            self.events.append(("info", f"peer {client_id} reachable"))
        return changed

    def get(self, client_id: str) -> PeerState | None:
        """The state of one peer."""
        return self._peers.get(client_id)

    def verified(self) -> list[PeerState]:
        """Peers of our farm that the database confirms."""
        return [state for state in self._peers.values() if state.verified]

    def snapshot(self) -> dict[str, Any]:
        """Everything the registry knows, for `aifarm peers`, the dashboard and the tray."""
        peers = []
        for client_id, state in sorted(self._peers.items()):
            peer = state.peer
            peers.append(
                {
                    "client_id": client_id,
                    "hostname": peer.hostname,
                    "addresses": list(peer.addresses),
                    "peer_port": peer.peer_port,
                    "farm_name": peer.farm_name,
                    "version": peer.version,
                    "source": peer.source,
                    "verified": state.verified,
                    "db_status": state.db_status,
                    "reachable": state.reachable,
                    "reach_error": state.reach_error,
                    "last_seen": state.last_seen,
                    **state.extra,
                }
            )
        return {
            "farm_name": self.farm_name,
            "peers": [p for p in peers if p["farm_name"] == self.farm_name],
            "other_farms": [p for p in peers if p["farm_name"] != self.farm_name],
            "not_on_lan": [
                {"client_id": row["id"], "hostname": row.get("hostname"), "last_seen": row.get("last_seen")}
                for row in self._db_only
            ],
        }

    def drain_lost(self) -> set[str]:
        """Client ids of farm peers that left since the last call."""
        out = set(self.lost_ids)
        self.lost_ids.clear()
        return out

    def drain_events(self) -> list[tuple[str, str]]:
        """Events since the last call, oldest first."""
        out = list(self.events)
        self.events.clear()
        return out
