"""This machine's network addresses and subnets, for advertising and for reachability advice."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class LocalAddress:
    """One address of one interface."""

    interface: str
    ip: str
    prefix: int

    @property
    def network(self) -> str:
        """The subnet in CIDR notation."""
        return str(ipaddress.ip_interface(f"{self.ip}/{self.prefix}").network)

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8 and ::1."""
        return ipaddress.ip_address(self.ip).is_loopback


def local_addresses() -> list[LocalAddress]:
    """IPv4 addresses of every interface that is up (link-local excluded)."""
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for addr in addrs:
            if addr.family != socket.AF_INET or not addr.netmask:
                continue
            ip = ipaddress.ip_address(addr.address)
            if ip.is_link_local:
                continue
            prefix = ipaddress.ip_network(f"0.0.0.0/{addr.netmask}").prefixlen
            out.append(LocalAddress(name, addr.address, prefix))
    return out


def same_subnet(ip: str, addresses: list[LocalAddress]) -> LocalAddress | None:
    """The local address whose subnet contains ip, if any."""
    target = ipaddress.ip_address(ip)
    for local in addresses:
        if target in ipaddress.ip_interface(f"{local.ip}/{local.prefix}").network:
            return local
    return None
