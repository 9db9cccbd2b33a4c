"""The peer registry: discovery events in, database-verified views and log events out, on an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from app.discovery.peer import Peer
from app.discovery.registry import PeerRegistry

OWN = "me-000000000000"
FARM = "lab"


class FakeClock:
    """A settable clock: call it for the current time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The current fake time."""
        return self.now


def _peer(client_id: str, farm: str = FARM, source: str = "mdns", address: str = "192.168.1.20") -> Peer:
    """A peer with a service name derived from its id (mdns only)."""
    return Peer(
        client_id=client_id,
        farm_name=farm,
        version="1.0",
        addresses=(address,),
        peer_port=8471,
        hostname=f"host-{client_id}",
        source=source,
        service_name=f"{client_id}._aifarm._tcp.local." if source == "mdns" else "",
    )


def _row(client_id: str, status: str = "active") -> dict[str, Any]:
    """A clients table row as the queries return it."""
    return {"id": client_id, "status": status, "hostname": f"host-{client_id}", "last_seen": "2024-01-01T00:00:00"}


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at t=1000."""
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> PeerRegistry:
    """An empty registry of farm 'lab' for client OWN."""
    return PeerRegistry(OWN, FARM, clock=clock)


def _ids(snapshot_list: list[dict[str, Any]]) -> list[str]:
    """Client ids of a snapshot list."""
    return [item["client_id"] for item in snapshot_list]


def test_found_records_peer_with_times(registry: PeerRegistry, clock: FakeClock) -> None:
    """A found peer is listed, unverified, with first/last seen from the clock."""
    registry.found(_peer("a"))
    clock.now = 1005.0
    registry.found(_peer("a", address="192.168.1.21"))
    state = registry.get("a")
    assert state is not None
    assert (state.first_seen, state.last_seen, state.verified) == (1000.0, 1005.0, False)
    assert state.peer.addresses == ("192.168.1.21",)
    assert registry.farm_peer_ids() == ["a"]
    assert _ids(registry.snapshot()["peers"]) == ["a"]


def test_own_id_is_ignored(registry: PeerRegistry) -> None:
    """Our own advertisement is not a peer and makes no event."""
    registry.found(_peer(OWN))
    assert registry.get(OWN) is None
    assert registry.snapshot()["peers"] == []
    assert registry.drain_events() == []


def test_lost_by_service_name(registry: PeerRegistry) -> None:
    """A zeroconf goodbye (service name) removes the peer and says it left."""
    registry.found(_peer("a"))
    registry.drain_events()
    registry.lost("a._aifarm._tcp.local.")
    assert registry.get("a") is None
    assert registry.drain_events() == [("info", "peer a left")]


def test_lost_by_client_id(registry: PeerRegistry) -> None:
    """Losing a peer by its client id also removes it."""
    registry.found(_peer("b", source="manual"))
    registry.lost("b")
    assert registry.get("b") is None
    assert registry.farm_peer_ids() == []


def test_lost_unknown_is_harmless(registry: PeerRegistry) -> None:
    """Losing something never seen does nothing."""
    registry.lost("nobody._aifarm._tcp.local.")
    assert registry.drain_events() == []


def test_other_farm_is_listed_separately_and_never_verified(registry: PeerRegistry) -> None:
    """A peer of another farm goes to other_farms and stays unverified even with an active DB row."""
    registry.found(_peer("x", farm="other"))
    registry.apply_database([_row("x", "active")], [])
    snapshot = registry.snapshot()
    assert snapshot["peers"] == []
    assert _ids(snapshot["other_farms"]) == ["x"]
    assert snapshot["other_farms"][0]["verified"] is False
    assert registry.verified() == []
    assert registry.farm_peer_ids() == []
    events = registry.drain_events()
    assert events == [("info", "agent x of farm 'other' seen on the LAN")]


def test_apply_database_verifies_only_active_rows(registry: PeerRegistry) -> None:
    """Active row: verified; inactive row or no row: not verified."""
    for client_id in ("active", "inactive", "missing"):
        registry.found(_peer(client_id))
    registry.apply_database([_row("active"), _row("inactive", "inactive")], [])
    assert [state.peer.client_id for state in registry.verified()] == ["active"]
    by_id = {item["client_id"]: item for item in registry.snapshot()["peers"]}
    assert (by_id["active"]["verified"], by_id["active"]["db_status"]) == (True, "active")
    assert (by_id["inactive"]["verified"], by_id["inactive"]["db_status"]) == (False, "inactive")
    assert (by_id["missing"]["verified"], by_id["missing"]["db_status"]) == (False, None)


def test_verification_is_withdrawn_when_row_goes_inactive(registry: PeerRegistry) -> None:
    """A peer whose row becomes inactive is no longer verified."""
    registry.found(_peer("a"))
    registry.apply_database([_row("a")], [])
    assert len(registry.verified()) == 1
    registry.apply_database([_row("a", "inactive")], [])
    assert registry.verified() == []


def test_not_on_lan_lists_active_clients_not_seen(registry: PeerRegistry) -> None:
    """DB-active clients that discovery has not seen are listed under not_on_lan."""
    registry.found(_peer("seen"))
    registry.apply_database([_row("seen")], [_row("seen"), _row("remote")])
    not_on_lan = registry.snapshot()["not_on_lan"]
    assert not_on_lan == [{"client_id": "remote", "hostname": "host-remote", "last_seen": "2024-01-01T00:00:00"}]


def test_expire_drops_only_stale_peers_of_that_source(registry: PeerRegistry, clock: FakeClock) -> None:
    """expire removes peers of the given source older than the cutoff and nothing else."""
    registry.found(_peer("old-manual", source="manual"))
    registry.found(_peer("old-mdns"))
    clock.now = 1025.0
    registry.found(_peer("new-manual", source="manual"))
    clock.now = 1040.0
    registry.expire(30.0, "manual")
    assert registry.get("old-manual") is None
    assert registry.get("new-manual") is not None
    assert registry.get("old-mdns") is not None


def test_mdns_replaces_manual_but_not_the_reverse(registry: PeerRegistry) -> None:
    """An mDNS sighting upgrades a manual peer; a manual sighting does not downgrade an mDNS one."""
    registry.found(_peer("a", source="manual", address="10.0.0.1"))
    registry.found(_peer("a", source="mdns", address="10.0.0.2"))
    state = registry.get("a")
    assert state is not None and state.peer.source == "mdns"
    registry.found(_peer("a", source="manual", address="10.0.0.3"))
    assert state.peer.source == "mdns" and state.peer.addresses == ("10.0.0.2",)


def test_set_reachability_reports_changes_only(registry: PeerRegistry) -> None:
    """True only when reachability changed; a warning when lost, info when regained."""
    registry.found(_peer("a"))
    registry.drain_events()
    assert registry.set_reachability("a", False, "connection refused") is True
    assert registry.set_reachability("a", False, "connection refused") is False
    assert registry.set_reachability("a", True, None) is True
    assert registry.set_reachability("a", True, None) is False
    assert registry.drain_events() == [
        ("warning", "cannot reach peer a: connection refused"),
        ("info", "peer a reachable"),
    ]
    state = registry.get("a")
    assert state is not None and (state.reachable, state.reach_error) == (True, None)


def test_set_reachability_of_unknown_peer(registry: PeerRegistry) -> None:
    """Reachability of a peer not in the registry is not a change."""
    assert registry.set_reachability("ghost", False, "x") is False
    assert registry.drain_events() == []


def test_drain_events_returns_and_clears(registry: PeerRegistry) -> None:
    """Events come out oldest first, once: joined, verified, left."""
    registry.found(_peer("a"))
    registry.apply_database([_row("a")], [])
    registry.apply_database([_row("a")], [])
    registry.lost("a._aifarm._tcp.local.")
    events = registry.drain_events()
    assert [level for level, _ in events] == ["info", "info", "info"]
    assert events[0][1].startswith("peer a joined (mdns, 192.168.1.20:8471)")
    assert events[1][1] == "peer a verified against the database"
    assert events[2][1] == "peer a left"
    assert registry.drain_events() == []
