"""HTTP(S) GET of a dataset URL that connects only to checked addresses of allowlisted hosts, redirects included."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from app.training.sources import SourceRefused, address_refusal, check_url

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)

Resolver = Callable[[str, int], list[str]]
Connector = Callable[[tuple[str, int], float], socket.socket]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def system_connect(address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection to exactly this address."""
    return socket.create_connection(address, timeout)


@dataclass(frozen=True)
class Network:
    """How names are resolved and connections made (tests replace both; the product uses the system's)."""

    resolve: Resolver = system_resolver
    connect: Connector = system_connect


@dataclass
class Fetched:
    """An open response and the connection it came on; close() releases both."""

    response: http.client.HTTPResponse
    connection: http.client.HTTPConnection
    addresses: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Close the response and its connection."""
        self.response.close()
        self.connection.close()


def checked_address(host: str, port: int, network: Network) -> str:
    """The address to connect to: every resolved address must be allowed, and the first is used."""
    try:
        addresses = network.resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise SourceRefused(f"{host} does not resolve: {exc}") from None
    if not addresses:
        raise SourceRefused(f"{host} does not resolve")
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise SourceRefused(f"{host} resolves to {reason}")
    return addresses[0]


def _connection(scheme: str, host: str, port: int, address: str, timeout: float,
                network: Network) -> http.client.HTTPConnection:
    """An HTTP(S) connection to host (Host header, TLS name) that dials the checked address only."""
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    conn._create_connection = lambda _addr, timeout=timeout, source=None: network.connect((address, port), timeout)  # type: ignore[attr-defined]
    return conn


def open_checked(url: str, hosts: tuple[str, ...], *, timeout: float, network: Network | None = None,
                 max_redirects: int = MAX_REDIRECTS) -> Fetched:
    """GET url, following at most max_redirects redirects, each to an allowlisted host at an allowed address.

    SourceRefused (policy) or OSError/HTTPException (network) on failure; HTTP statuses other than 200 are
    SourceRefused too. The caller reports all of them the same way.
    """
    network = network or Network()
    visited: list[str] = []
    for _ in range(max_redirects + 1):
        scheme, host, port = check_url(url, hosts)
        address = checked_address(host, port, network)
        visited.append(address)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = _connection(scheme, host, port, address, timeout, network)
        try:
            conn.request("GET", target, headers={"User-Agent": "aifarm", "Accept-Encoding": "identity"})
            response = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if response.status in REDIRECTS:
            location = response.getheader("Location")
            response.close()
            conn.close()
            if not location:
                raise SourceRefused(f"HTTP {response.status} without a Location")
            url = urljoin(url, location)
            continue
        if response.status != 200:
            response.close()
            conn.close()
            raise SourceRefused(f"HTTP {response.status} {response.reason}")
        return Fetched(response, conn, visited)
    raise SourceRefused(f"more than {max_redirects} redirects")
