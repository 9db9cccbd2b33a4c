"""Converting zeroconf service records into Peers: good records parse, anything odd is dropped."""

from __future__ import annotations

import pytest

from app.discovery.peer import Peer, peer_from_service

NAME = "lab-box-0123456789ab._aifarm._tcp.local."


def _props(**overrides: bytes | None) -> dict[bytes, bytes | None]:
    """TXT properties of a good record, with overrides (None removes a key)."""
    props: dict[str, bytes | None] = {
        "id": b"lab-box-0123456789ab",
        "farm": b"lab",
        "version": b"0.3.1",
        "peer_port": b"8471",
        "host": b"lab-box",
    }
    props.update(overrides)
    return {key.encode(): value for key, value in props.items() if value is not None}


def _parse(
    props: dict[bytes, bytes | None] | None = None,
    addresses: list[str] | None = None,
    port: int | None = 8471,
    server: str | None = "lab-box.local.",
) -> Peer | None:
    """peer_from_service with good defaults."""
    return peer_from_service(
        NAME, _props() if props is None else props, ["192.168.1.20"] if addresses is None else addresses, port, server
    )


def test_good_record_gives_a_peer() -> None:
    """Every field of a good record ends up in the Peer."""
    peer = _parse(addresses=["192.168.1.20", "fd00::20"])
    assert peer == Peer(
        client_id="lab-box-0123456789ab",
        farm_name="lab",
        version="0.3.1",
        addresses=("192.168.1.20", "fd00::20"),
        peer_port=8471,
        hostname="lab-box",
        source="mdns",
        service_name=NAME,
    )


def test_peer_port_falls_back_to_service_port_and_host_to_server() -> None:
    """Without peer_port/host TXT keys the SRV port and server name are used."""
    peer = _parse(_props(peer_port=None, host=None, version=None), port=9000, server="other-box.local.")
    assert peer is not None
    assert (peer.peer_port, peer.hostname, peer.version) == (9000, "other-box", "?")


def test_duplicate_addresses_and_scope_ids_are_collapsed() -> None:
    """Repeated addresses appear once; an IPv6 scope id is removed."""
    peer = _parse(addresses=["192.168.1.20", "192.168.1.20", "fe80::1%eth0", "not-an-ip"])
    assert peer is not None
    assert peer.addresses == ("192.168.1.20", "fe80::1")


def test_overlong_version_is_truncated() -> None:
    """The version string is kept to 50 characters."""
    peer = _parse(_props(version=b"9" * 500))
    assert peer is not None and peer.version == "9" * 50


@pytest.mark.parametrize(
    "overrides",
    [
        {"id": None},
        {"id": b""},
        {"id": b"lab box"},
        {"id": b"../etc"},
        {"id": b"a/../b"},
        {"id": b"-leading-dash"},
        {"id": b"a" * 129},
        {"id": b"lab-box\n"},
        {"id": b"lab-box\x00"},
        {"farm": None},
        {"farm": b""},
        {"farm": b"my farm"},
        {"farm": b"farm.name"},
        {"farm": b"farm/../x"},
        {"farm": b"f" * 64},
        {"farm": b"lab\n"},
        {"peer_port": b"http"},
        {"peer_port": b"84 71"},
        {"peer_port": b"0"},
        {"peer_port": b"-1"},
        {"peer_port": b"65536"},
        {"peer_port": b"99999999"},
        {"id": b"\xff\xfe-bad-utf8"},
        {"farm": b"l\xe9b"},
    ],
)
def test_bad_records_are_dropped(overrides: dict[str, bytes | None]) -> None:
    """A record with a missing or invalid id, farm or port gives None."""
    assert _parse(_props(**overrides)) is None


def test_longest_valid_id_is_accepted() -> None:
    """An id of exactly 128 characters is still valid."""
    peer = _parse(_props(id=b"a" * 128))
    assert peer is not None and peer.client_id == "a" * 128


def test_missing_port_everywhere_is_dropped() -> None:
    """No peer_port TXT key and no SRV port: None."""
    assert _parse(_props(peer_port=None), port=None) is None


@pytest.mark.parametrize(
    "addresses",
    [[], ["0.0.0.0"], ["::"], ["224.0.0.251"], ["ff02::fb"], ["0.0.0.0", "239.255.255.250", "garbage"]],
)
def test_no_usable_address_is_dropped(addresses: list[str]) -> None:
    """Only unspecified, multicast or unparsable addresses: None."""
    assert _parse(addresses=addresses) is None


def test_endpoint_prefers_ipv4() -> None:
    """endpoint() picks an IPv4 address over an IPv6 one listed first."""
    peer = _parse(addresses=["fd00::20", "2001:db8::1", "10.0.0.7"])
    assert peer is not None
    assert peer.endpoint() == ("10.0.0.7", 8471)


def test_endpoint_ipv6_only_and_none() -> None:
    """endpoint() uses IPv6 when that is all there is, and is None without addresses."""
    peer = _parse(addresses=["fd00::20"])
    assert peer is not None
    assert peer.endpoint() == ("fd00::20", 8471)
    assert peer.with_addresses(()).endpoint() is None
