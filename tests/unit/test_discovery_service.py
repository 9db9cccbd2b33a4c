"""Reachability advice for unreachable peers, and manual peers built from a status answer."""

from __future__ import annotations

from typing import Any

import pytest

from app.discovery.peer import Peer
from app.discovery.service import peer_from_status, reach_advice
from app.netinfo import LocalAddress

OWN = [
    LocalAddress("lo", "127.0.0.1", 8),
    LocalAddress("eth0", "192.168.1.10", 24),
    LocalAddress("wlan0", "10.20.0.5", 16),
]


def _peer(address: str, hostname: str = "gpu-box") -> Peer:
    """A verified-looking peer at one address."""
    return Peer(
        client_id="gpu-box-0123456789ab",
        farm_name="lab",
        version="1.0",
        addresses=(address,),
        peer_port=8471,
        hostname=hostname,
    )


def test_same_subnet_advice_names_port_interface_and_subnet() -> None:
    """A peer on one of our subnets: open its port, reached through our interface and subnet."""
    advice = reach_advice(_peer("192.168.1.77"), ("192.168.1.77", 8471), OWN)
    assert "allow incoming TCP port 8471" in advice
    assert "gpu-box" in advice
    assert "eth0" in advice and "192.168.1.0/24" in advice
    assert "peers" not in advice


def test_same_subnet_advice_picks_the_matching_interface() -> None:
    """The interface named is the one whose subnet holds the peer."""
    advice = reach_advice(_peer("10.20.99.1"), ("10.20.99.1", 9000), OWN)
    assert "port 9000" in advice
    assert "wlan0" in advice and "10.20.0.0/16" in advice
    assert "eth0" not in advice


def test_other_subnet_advice_suggests_peers_setting() -> None:
    """A peer on none of our subnets: say so, list our subnets (no loopback), suggest `peers`."""
    advice = reach_advice(_peer("172.16.5.5"), ("172.16.5.5", 8471), OWN)
    assert "none of this machine's subnets" in advice
    assert "172.16.5.5" in advice
    assert "192.168.1.0/24 (eth0)" in advice and "10.20.0.0/16 (wlan0)" in advice
    assert "127.0.0.0/8" not in advice
    assert "peers = " in advice and ":8471" in advice


def test_other_subnet_advice_without_interfaces_says_none() -> None:
    """With only loopback, the subnet list reads 'none'."""
    advice = reach_advice(_peer("172.16.5.5"), ("172.16.5.5", 8471), OWN[:1])
    assert "subnets (none)" in advice


def test_advice_falls_back_to_client_id_without_hostname() -> None:
    """A peer without a hostname is named by its client id."""
    advice = reach_advice(_peer("172.16.5.5", hostname=""), ("172.16.5.5", 8471), OWN)
    assert advice.startswith("gpu-box-0123456789ab advertised")


def test_ipv6_peer_is_on_none_of_our_ipv4_subnets() -> None:
    """An IPv6 address is compared safely against IPv4 subnets."""
    advice = reach_advice(_peer("fd00::5"), ("fd00::5", 8471), OWN)
    assert "none of this machine's subnets" in advice


def test_host_name_from_peers_setting_gives_advice_not_an_error() -> None:
    """A manual peer given by host name (not an IP) still gets advice naming the host and port."""
    advice = reach_advice(_peer("gpu-box.lan"), ("gpu-box.lan", 8471), OWN)
    assert "gpu-box.lan" in advice and "8471" in advice


def test_peer_from_status_builds_a_manual_peer() -> None:
    """A status answer becomes a manual Peer at the address we asked."""
    status = {"client_id": "gpu-box-0123456789ab", "farm_name": "lab", "version": "1.2", "hostname": "gpu-box"}
    peer = peer_from_status(status, "10.0.0.9", 8471)
    assert peer == Peer(
        client_id="gpu-box-0123456789ab",
        farm_name="lab",
        version="1.2",
        addresses=("10.0.0.9",),
        peer_port=8471,
        hostname="gpu-box",
        source="manual",
        service_name="",
    )


def test_peer_from_status_defaults_and_truncation() -> None:
    """Missing version/hostname get defaults; long ones are truncated."""
    peer = peer_from_status({"client_id": "a1", "farm_name": "lab"}, "10.0.0.9", 1)
    assert peer is not None and (peer.version, peer.hostname) == ("?", "")
    peer = peer_from_status({"client_id": "a1", "farm_name": "lab", "version": "v" * 99, "hostname": "h" * 999}, "h", 1)
    assert peer is not None and (len(peer.version), len(peer.hostname)) == (50, 255)


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"client_id": "a1"},
        {"farm_name": "lab"},
        {"client_id": 7, "farm_name": "lab"},
        {"client_id": "a1", "farm_name": ["lab"]},
        {"client_id": "", "farm_name": "lab"},
        {"client_id": "a1", "farm_name": ""},
        {"client_id": "../../etc", "farm_name": "lab"},
        {"client_id": "a b", "farm_name": "lab"},
        {"client_id": "a" * 129, "farm_name": "lab"},
        {"client_id": "a1", "farm_name": "my farm"},
        {"client_id": "a1\n", "farm_name": "lab"},
    ],
)
def test_peer_from_status_rejects_bad_answers(status: dict[str, Any]) -> None:
    """A status without a valid client id and farm name gives None."""
    assert peer_from_status(status, "10.0.0.9", 8471) is None
