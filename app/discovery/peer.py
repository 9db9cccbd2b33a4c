"""The Peer model: what we know about another agent, converted from zeroconf records at the boundary."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any

SERVICE_TYPE = "_aifarm._tcp.local."
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FARM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Peer:
    """Another agent, as discovery saw it (a hint until the database agrees)."""

    client_id: str
    farm_name: str
    version: str
    addresses: tuple[str, ...]
    peer_port: int
    hostname: str = ""
    source: str = "mdns"  # "mdns" or "manual"
    service_name: str = ""

    def endpoint(self) -> tuple[str, int] | None:
        """The first address to contact, preferring IPv4."""
        ordered = sorted(self.addresses, key=lambda a: ":" in a)
        return (ordered[0], self.peer_port) if ordered else None

    def with_addresses(self, addresses: tuple[str, ...]) -> "Peer":
        """A copy with other addresses."""
        return replace(self, addresses=addresses)


@dataclass
class PeerState:
    """A peer plus what the registry learned about it."""

    peer: Peer
    first_seen: float
    last_seen: float
    verified: bool = False
    db_status: str | None = None
    reachable: bool | None = None
    reach_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _text(properties: dict[bytes, bytes | None], key: str) -> str | None:
    value = properties.get(key.encode())
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def peer_from_service(
    name: str, properties: dict[bytes, bytes | None], addresses: list[str], port: int | None, server: str | None
) -> Peer | None:
    """A Peer from a resolved zeroconf service, or None when the record does not parse."""
    client_id = _text(properties, "id")
    farm = _text(properties, "farm")
    version = _text(properties, "version") or "?"
    peer_port_text = _text(properties, "peer_port")
    if not client_id or not _CLIENT_ID.fullmatch(client_id) or not farm or not _FARM.fullmatch(farm):
        return None
    try:
        peer_port = int(peer_port_text) if peer_port_text else int(port or 0)
    except ValueError:
        return None
    if not 0 < peer_port < 65536:
        return None
    valid = []
    for address in addresses:
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            continue
        if not parsed.is_unspecified and not parsed.is_multicast:
            valid.append(str(parsed))
    if not valid:
        return None
    return Peer(
        client_id=client_id,
        farm_name=farm,
        version=version[:50],
        addresses=tuple(dict.fromkeys(valid)),
        peer_port=peer_port,
        hostname=(_text(properties, "host") or (server or "").rstrip(".").removesuffix(".local"))[:255],
        source="mdns",
        service_name=name,
    )
