"""The dashboard's Host check helper."""

from __future__ import annotations

import pytest

from app.web.middlewares import host_without_port


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:8470", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
        ("EXAMPLE.com:1", "example.com"),
        ("  LocalHost:8470 ", "localhost"),
        ("::1", "::1"),
        ("", ""),
    ],
)
def test_host_without_port(host: str, expected: str) -> None:
    """The port is removed and the name lower-cased; bracketed IPv6 keeps its brackets."""
    assert host_without_port(host) == expected
