"""Where a task's data may come from: local paths inside the volunteer's dataset_dirs, URLs on the farm's dataset hosts."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
HOST_HELP = "expected a host name or IP address, optionally with :PORT (e.g. data.example.org or 10.0.0.5:8000)"


class SourceRefused(Exception):
    """A dataset source this machine may not open or fetch."""


@dataclass(frozen=True)
class SourcePolicy:
    """The folders a task may read (this machine's dataset_dirs) and the hosts it may download from (the farm's)."""

    dirs: tuple[Path, ...] = ()
    hosts: tuple[str, ...] = ()


def is_url(source: str) -> bool:
    """True for an http(s) URL."""
    return source.lower().startswith(("http://", "https://"))


def _normal_host(text: str) -> str:
    """A lower-case host name or a canonical IP address; ValueError when it is neither."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(HOST_HELP)
    return name


def parse_host_entry(value: str) -> str:
    """A dataset host as stored: 'host', 'host:port', 'ip', 'ip:port' or '[ipv6]:port'; ValueError naming the problem."""
    text = str(value).strip()
    if not text or any(ch.isspace() or ch in "/?#@" for ch in text):
        raise ValueError(HOST_HELP)
    port: str | None = None
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(HOST_HELP)
        host_text, port = inside, (rest[1:] if rest else None)
        if ":" not in host_text:
            raise ValueError(HOST_HELP)
    elif text.count(":") == 1:
        host_text, port = text.split(":")
    else:
        host_text = text
    if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError(f"{port!r} is not a port (1-65535)")
    host = _normal_host(host_text)
    if port is None:
        return host
    return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"


def _split_entry(entry: str) -> tuple[str, int | None]:
    """(host, port or None) of a stored entry."""
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        return inside, int(rest[1:]) if rest else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, None


def host_allowed(host: str, port: int, hosts: tuple[str, ...]) -> bool:
    """True when host (any port) or host:port is on the allowlist."""
    try:
        name = _normal_host(host)
    except ValueError:
        return False
    for entry in hosts:
        try:
            allowed, allowed_port = _split_entry(parse_host_entry(entry))
        except ValueError:
            continue
        if allowed == name and (allowed_port is None or allowed_port == port):
            return True
    return False


def address_refusal(address: str) -> str | None:
    """Why an IP address is never fetched from (loopback, link-local, unspecified, multicast), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("0.0.0.0/8")):
        return f"{ip} is an unspecified address"
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{ip} is a multicast or broadcast address"
    return None


def url_target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; SourceRefused when it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SourceRefused("it is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise SourceRefused("only http:// and https:// URLs with a host are fetched")
    if parts.username is not None or parts.password is not None:
        raise SourceRefused("a URL with a user name or password is not fetched")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def check_url(url: str, hosts: tuple[str, ...]) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL whose host is on the farm's dataset hosts and is no refused address."""
    scheme, host, port = url_target(url)
    if not host_allowed(host, port, hosts):
        raise SourceRefused(f"{host} is not one of the farm's dataset hosts (aifarm farm dataset-hosts add)")
    if host == "localhost" or host.endswith(".localhost"):
        raise SourceRefused(f"{host} is this machine")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return scheme, host, port
    reason = address_refusal(host)
    if reason:
        raise SourceRefused(reason)
    return scheme, host, port


def check_path(source: str, dirs: tuple[Path, ...]) -> Path:
    """The real path of a local source inside one of dirs (symlinks and '..' resolved first); SourceRefused if not."""
    if "\x00" in source:
        raise SourceRefused("it is not a valid path")
    path = Path(source).expanduser()
    if not path.is_absolute():
        raise SourceRefused("a local path must be absolute")
    if not dirs:
        raise SourceRefused("no dataset_dirs are set on this machine (aifarm prefs set dataset_dirs FOLDER)")
    real = path.resolve()
    for folder in dirs:
        base = Path(folder).expanduser().resolve()
        if real == base or base in real.parents:
            return real
    raise SourceRefused("it is outside every folder of dataset_dirs")


def source_problem(source: str, policy: SourcePolicy) -> str | None:
    """'is not allowed: why' for a source the policy refuses, or None."""
    try:
        if is_url(source):
            check_url(source, policy.hosts)
        elif "://" in source:
            raise SourceRefused("only http:// and https:// URLs are supported")
        else:
            check_path(source, policy.dirs)
    except SourceRefused as exc:
        return f"is not allowed: {exc}"
    return None
