"""Dataset source rules: dataset_dirs paths (symlinks and '..' resolved), dataset host entries, refused addresses,
and the checked fetch (every resolved address, the dialled address, every redirect) with an injected resolver."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.training.fetch import Network, open_checked
from app.training.sources import (
    SourcePolicy,
    SourceRefused,
    address_refusal,
    check_path,
    check_url,
    host_allowed,
    parse_host_entry,
    source_problem,
)

# --- local paths -----------------------------------------------------------------------------------------------------


def test_paths_inside_dataset_dirs_are_allowed_after_resolving(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "datasets", tmp_path / "private"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "sub" / "a.csv").write_text("x")
    (outside / "api_token").write_text("secret")
    (allowed / "token-link").symlink_to(outside / "api_token")
    (allowed / "dir-link").symlink_to(outside)
    (outside / "to-allowed").symlink_to(allowed)
    dirs = (allowed,)

    assert check_path(str(allowed / "sub" / "a.csv"), dirs) == (allowed / "sub" / "a.csv").resolve()
    assert check_path(str(outside / "to-allowed" / "sub" / "a.csv"), dirs) == (allowed / "sub" / "a.csv").resolve()
    assert check_path(str(allowed / "not-yet-there.csv"), dirs) == (allowed / "not-yet-there.csv").resolve()
    for refused in (outside / "api_token", allowed / "token-link", allowed / "dir-link" / "api_token",
                    allowed / ".." / "private" / "api_token", allowed / "sub" / ".." / ".." / "private" / "api_token",
                    Path("/etc/passwd")):
        with pytest.raises(SourceRefused, match="outside every folder of dataset_dirs"):
            check_path(str(refused), dirs)
    with pytest.raises(SourceRefused, match="no dataset_dirs are set"):
        check_path(str(allowed / "sub" / "a.csv"), ())
    with pytest.raises(SourceRefused, match="must be absolute"):
        check_path("sub/a.csv", dirs)


def test_a_sibling_folder_with_the_same_prefix_is_outside(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data-private").mkdir()
    with pytest.raises(SourceRefused):
        check_path(str(tmp_path / "data-private" / "x"), (tmp_path / "data",))


# --- dataset hosts -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, stored", [
    ("Data.Example.org", "data.example.org"), ("data.example.org.", "data.example.org"),
    ("files.lan:8000", "files.lan:8000"), ("10.0.0.5", "10.0.0.5"), ("10.0.0.5:80", "10.0.0.5:80"),
    ("2001:DB8::1", "2001:db8::1"), ("[2001:db8::1]:8443", "[2001:db8::1]:8443"), ("  nas  ", "nas"),
])
def test_host_entries_are_normalised(text: str, stored: str) -> None:
    assert parse_host_entry(text) == stored


@pytest.mark.parametrize("text", ["", "http://x.org", "x.org/path", "user@x.org", "x.org:0", "x.org:65536",
                                  "x.org:http", "bad_name.org", "-x.org", "a b", "[::1", "[x.org]:80", "a" * 64 + ".org"])
def test_bad_host_entries_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_entry(text)


def test_host_matching_respects_the_port() -> None:
    hosts = ("files.lan:8000", "data.example.org")
    assert host_allowed("files.lan", 8000, hosts) and not host_allowed("files.lan", 80, hosts)
    assert host_allowed("DATA.example.org", 443, hosts) and host_allowed("data.example.org", 8080, hosts)
    assert not host_allowed("evil.example.org", 443, hosts) and not host_allowed("example.org", 443, hosts)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.1", "::1", "169.254.169.254", "fe80::1", "fe80::1%eth0",
                                     "0.0.0.0", "0.1.2.3", "::", "224.0.0.251", "ff02::fb", "255.255.255.255",
                                     "::ffff:127.0.0.1", "::ffff:169.254.1.1"])
def test_refused_addresses(address: str) -> None:
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "192.0.2.7", "8.8.8.8", "2001:db8::1"])
def test_allowed_addresses(address: str) -> None:
    assert address_refusal(address) is None


def test_loopback_and_localhost_are_refused_even_when_allowlisted() -> None:
    hosts = ("127.0.0.1", "localhost", "[::1]:8000", "169.254.169.254")
    for url in ("http://127.0.0.1/x", "http://localhost/x", "http://[::1]:8000/x", "http://169.254.169.254/latest"):
        with pytest.raises(SourceRefused):
            check_url(url, hosts)
    assert source_problem("http://127.0.0.1/x", SourcePolicy(hosts=hosts)) == "is not allowed: 127.0.0.1 is a loopback address"
    assert source_problem("https://files.lan/x", SourcePolicy(hosts=("files.lan",))) is None
    assert "not one of the farm's dataset hosts" in str(source_problem("https://other.lan/x", SourcePolicy(hosts=("files.lan",))))
    for url in ("ftp://files.lan/x", "http://user:pw@files.lan/x"):
        assert source_problem(url, SourcePolicy(hosts=("files.lan",))) is not None


# --- the checked fetch, with an injected resolver and connector ------------------------------------------------------


class Server:
    """A loopback HTTP server answering by path: 200 with a body, or a redirect to a Location."""

    def __init__(self, routes: dict[str, tuple[int, str]]) -> None:
        self.routes = routes
        self.hits: list[tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                """A route's answer."""
                server.hits.append((self.headers.get("Host", ""), self.path))
                status, value = server.routes.get(self.path, (404, ""))
                self.send_response(status)
                if status in (301, 302, 303, 307, 308):
                    self.send_header("Location", value)
                    value = ""
                self.send_header("Content-Length", str(len(value)))
                self.end_headers()
                self.wfile.write(value.encode())

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    """A Server with a few routes."""
    srv = Server({})
    try:
        yield srv
    finally:
        srv.close()


class FakeNet:
    """Names resolve from a table; every connection, whatever address was checked, is dialled to the loopback server."""

    def __init__(self, port: int, table: dict[str, list[str]]) -> None:
        self.port = port
        self.table = table
        self.resolved: list[str] = []
        self.dialled: list[tuple[str, int]] = []

    def network(self) -> Network:
        """A Network over this table."""
        def resolve(host: str, port: int) -> list[str]:
            self.resolved.append(host)
            if host not in self.table:
                raise socket.gaierror("unknown name")
            return self.table[host]

        def connect(address: tuple[str, int], timeout: float) -> socket.socket:
            self.dialled.append(address)
            return socket.create_connection(("127.0.0.1", self.port), timeout)

        return Network(resolve=resolve, connect=connect)


def _fetch(url: str, hosts: tuple[str, ...], net: FakeNet, **kwargs: Any) -> str:
    fetched = open_checked(url, hosts, timeout=5, network=net.network(), **kwargs)
    try:
        return fetched.response.read().decode()
    finally:
        fetched.close()


def test_fetch_dials_the_checked_address_and_sends_the_host_name(server: Server) -> None:
    server.routes["/data"] = (200, "payload")
    net = FakeNet(server.port, {"files.lan": ["192.0.2.7", "192.0.2.8"]})
    assert _fetch(f"http://files.lan:{server.port}/data", ("files.lan",), net) == "payload"
    assert net.dialled == [("192.0.2.7", server.port)]
    assert server.hits == [(f"files.lan:{server.port}", "/data")]


@pytest.mark.parametrize("addresses", [["127.0.0.1"], ["192.0.2.7", "127.0.0.1"], ["::1"], ["169.254.169.254"],
                                       ["192.0.2.7", "fe80::1"], ["0.0.0.0"], ["224.0.0.1"], []])
def test_every_resolved_address_must_be_allowed(server: Server, addresses: list[str]) -> None:
    server.routes["/data"] = (200, "payload")
    net = FakeNet(server.port, {"files.lan": addresses})
    with pytest.raises(SourceRefused):
        _fetch(f"http://files.lan:{server.port}/data", ("files.lan",), net)
    assert net.dialled == [] and server.hits == []  # refused before any connection


def test_a_host_off_the_allowlist_is_not_even_resolved(server: Server) -> None:
    net = FakeNet(server.port, {"other.lan": ["192.0.2.7"]})
    with pytest.raises(SourceRefused, match="not one of the farm's dataset hosts"):
        _fetch(f"http://other.lan:{server.port}/data", ("files.lan",), net)
    assert net.resolved == [] and net.dialled == []


def test_redirects_within_the_allowlist_are_followed(server: Server) -> None:
    server.routes["/a"] = (302, "/b")
    server.routes["/b"] = (301, f"http://mirror.lan:{server.port}/c")
    server.routes["/c"] = (200, "found")
    net = FakeNet(server.port, {"files.lan": ["192.0.2.7"], "mirror.lan": ["10.1.2.3"]})
    assert _fetch(f"http://files.lan:{server.port}/a", ("files.lan", "mirror.lan"), net) == "found"
    assert [path for _, path in server.hits] == ["/a", "/b", "/c"]
    assert net.dialled == [("192.0.2.7", server.port), ("192.0.2.7", server.port), ("10.1.2.3", server.port)]


@pytest.mark.parametrize("location, table, reason", [
    ("http://elsewhere.lan:{port}/x", {}, "not one of the farm's dataset hosts"),
    ("http://127.0.0.1:{port}/x", {}, "loopback"),
    ("http://169.254.169.254/latest/meta-data", {}, "link-local"),
    ("http://rebound.lan:{port}/x", {"rebound.lan": ["127.0.0.1"]}, "loopback"),
    ("http://localhost:{port}/x", {}, "this machine"),
    ("file:///etc/passwd", {}, "only http"),
])
def test_a_redirect_leaving_the_rules_is_refused(server: Server, location: str, table: dict[str, list[str]],
                                                  reason: str) -> None:
    server.routes["/a"] = (307, location.format(port=server.port))
    server.routes["/x"] = (200, "should not be read")
    net = FakeNet(server.port, {"files.lan": ["192.0.2.7"], **table})
    hosts = ("files.lan", "rebound.lan", "127.0.0.1", "169.254.169.254", "localhost")
    with pytest.raises(SourceRefused, match=reason):
        _fetch(f"http://files.lan:{server.port}/a", hosts, net)
    assert [path for _, path in server.hits] == ["/a"]
    assert len(net.dialled) == 1


def test_redirects_are_bounded(server: Server) -> None:
    server.routes["/loop"] = (302, "/loop")
    net = FakeNet(server.port, {"files.lan": ["192.0.2.7"]})
    with pytest.raises(SourceRefused, match="more than 3 redirects"):
        _fetch(f"http://files.lan:{server.port}/loop", ("files.lan",), net, max_redirects=3)
    assert len(server.hits) == 4


def test_an_http_error_status_is_refused(server: Server) -> None:
    net = FakeNet(server.port, {"files.lan": ["192.0.2.7"]})
    with pytest.raises(SourceRefused, match="HTTP 404"):
        _fetch(f"http://files.lan:{server.port}/missing", ("files.lan",), net)
