"""The peer API's HMAC request signing: round trip, body and nonce binding, replay cache, and every way a header
must be refused."""

from __future__ import annotations

import pytest

from app.peerapi import auth
from app.peerapi.auth import MAX_SKEW_SECONDS, SCHEME, NonceCache, Signed, sign, verify

SECRET = "s3cret-farm-key-0123456789"
NOW = 1_700_000_000.0
PATH = "/peer/v1/status"
CLIENT = "host-a-0123456789ab"
NONCE = "0123456789abcdef0123456789abcdef"


def _header(**overrides: object) -> str:
    """A header signed at NOW for GET PATH by CLIENT, with keyword overrides."""
    args: dict[str, object] = {"secret": SECRET, "method": "GET", "path_qs": PATH, "client_id": CLIENT, "now": NOW,
                               "nonce": NONCE}
    args.update(overrides)
    return sign(**args)  # type: ignore[arg-type]


def _sender(header: str | None, method: str = "GET", path: str = PATH, body: bytes = b"",
            now: float = NOW) -> str | None:
    """The verified sender of a header, or None."""
    signed = verify(SECRET, header, method, path, body, now=now)
    return signed.client_id if signed else None


def test_round_trip_returns_the_client_id() -> None:
    """A freshly signed header verifies and names its sender, time and nonce."""
    assert verify(SECRET, _header(), "GET", PATH, now=NOW) == Signed(CLIENT, int(NOW), NONCE)


def test_body_is_signed() -> None:
    """The signature covers the body's sha256: the same body verifies, any other body (or none) does not."""
    body = b'{"path": "models/a.pt"}'
    header = _header(method="POST", body=body)
    assert _sender(header, "POST", body=body) == CLIENT
    assert _sender(header, "POST", body=body + b" ") is None
    assert _sender(header, "POST", body=b'{"path": "models/b.pt"}') is None
    assert _sender(header, "POST") is None
    assert _sender(_header(method="POST"), "POST", body=body) is None


def test_fresh_nonce_per_signature() -> None:
    """Without an explicit nonce every signature gets a new random one."""
    first, second = sign(SECRET, "GET", PATH, CLIENT, now=NOW), sign(SECRET, "GET", PATH, CLIENT, now=NOW)
    assert first != second
    assert verify(SECRET, first, "GET", PATH, now=NOW).nonce != verify(SECRET, second, "GET", PATH, now=NOW).nonce


def test_tampered_nonce_is_refused() -> None:
    """Changing the nonce of a captured header (to dodge the replay cache) invalidates it."""
    header = _header().replace(f"nonce={NONCE}", f"nonce={'f' * 32}")
    assert _sender(header) is None


def test_replayed_nonce_is_refused_until_its_window_ends() -> None:
    """The cache admits a nonce once; a replay within the window is refused; expired nonces are forgotten."""
    cache = NonceCache()
    signed = Signed(CLIENT, int(NOW), NONCE)
    assert cache.admit(signed, now=NOW) == "ok"
    assert cache.admit(signed, now=NOW + 1) == "replay"
    assert cache.admit(signed, now=NOW + MAX_SKEW_SECONDS) == "replay"
    assert cache.admit(Signed(CLIENT, int(NOW), "a" * 32), now=NOW) == "ok"
    assert len(cache) == 2
    assert cache.admit(Signed(CLIENT, int(NOW) + 10 * MAX_SKEW_SECONDS, "b" * 32), now=NOW + 10 * MAX_SKEW_SECONDS) == "ok"
    assert len(cache) == 1


def test_nonce_cache_is_bounded() -> None:
    """A full cache refuses new nonces rather than forgetting live ones (which would allow their replay)."""
    cache = NonceCache(max_entries=3)
    for i in range(3):
        assert cache.admit(Signed(CLIENT, int(NOW), f"{i:032x}"), now=NOW) == "ok"
    assert cache.admit(Signed(CLIENT, int(NOW), "f" * 32), now=NOW) == "full"
    assert cache.admit(Signed(CLIENT, int(NOW), f"{0:032x}"), now=NOW) == "replay"
    assert len(cache) == 3
    assert cache.admit(Signed(CLIENT, int(NOW) + 1000, "f" * 32), now=NOW + 1000) == "ok"
    assert len(cache) == 1


def test_round_trip_with_query_string_and_lowercase_method() -> None:
    """The method is compared case-insensitively and the query string is part of what is signed."""
    header = _header(method="get", path_qs="/peer/v1/status?x=1&y=2")
    assert _sender(header, "GET", "/peer/v1/status?x=1&y=2") == CLIENT


def test_header_shape_and_secret_not_in_header() -> None:
    """The header uses the scheme, names client and time, and never contains the secret."""
    header = _header()
    assert header.startswith(f"{SCHEME} client={CLIENT},ts={int(NOW)},nonce={NONCE},sig=")
    assert SECRET not in header
    assert SECRET.encode().hex() not in header


def test_surrounding_whitespace_is_tolerated() -> None:
    """Leading and trailing whitespace around the header is stripped."""
    assert _sender(f"  {_header()}\t") == CLIENT


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header_is_refused(header: str | None) -> None:
    """No Authorization header: no sender."""
    assert verify(SECRET, header, "GET", PATH, now=NOW) is None


def test_wrong_scheme_is_refused() -> None:
    """A valid signature under another scheme name is refused."""
    header = _header().replace(SCHEME, "Bearer", 1)
    assert verify(SECRET, header, "GET", PATH, now=NOW) is None


def test_wrong_secret_is_refused() -> None:
    """A header signed with another farm's secret is refused."""
    assert verify(SECRET, _header(secret="another-farm-secret"), "GET", PATH, now=NOW) is None


def test_tampered_method_is_refused() -> None:
    """A signature for GET does not authorize POST."""
    assert verify(SECRET, _header(), "POST", PATH, now=NOW) is None


@pytest.mark.parametrize(
    "other_path",
    ["/peer/v1/other", "/peer/v1/status?", "/peer/v1/status?x=1", "/peer/v1/status/", "/PEER/v1/status"],
)
def test_tampered_path_is_refused(other_path: str) -> None:
    """A signature for one path (and query string) does not authorize another."""
    assert verify(SECRET, _header(), "GET", other_path, now=NOW) is None


def test_tampered_query_string_is_refused() -> None:
    """Changing a query parameter invalidates the signature."""
    header = _header(path_qs="/peer/v1/status?limit=1")
    assert verify(SECRET, header, "GET", "/peer/v1/status?limit=1000", now=NOW) is None


def test_tampered_client_id_is_refused() -> None:
    """Replacing the client id in a captured header invalidates it."""
    header = _header().replace(f"client={CLIENT}", "client=host-b-ffffffffffff")
    assert verify(SECRET, header, "GET", PATH, now=NOW) is None


def test_tampered_timestamp_is_refused() -> None:
    """Moving the timestamp of a captured header (to refresh it) invalidates it."""
    header = _header(now=NOW - 1000).replace(f"ts={int(NOW - 1000)}", f"ts={int(NOW)}")
    assert verify(SECRET, header, "GET", PATH, now=NOW) is None


@pytest.mark.parametrize("offset", [0, MAX_SKEW_SECONDS, -MAX_SKEW_SECONDS])
def test_timestamp_within_skew_is_accepted(offset: int) -> None:
    """Clocks that differ by up to MAX_SKEW_SECONDS still agree."""
    assert _sender(_header(now=NOW + offset)) == CLIENT


@pytest.mark.parametrize("offset", [MAX_SKEW_SECONDS + 1, -(MAX_SKEW_SECONDS + 1), 86_400, -86_400])
def test_timestamp_outside_skew_is_refused(offset: int) -> None:
    """A header older or newer than MAX_SKEW_SECONDS is refused (replay window)."""
    assert verify(SECRET, _header(now=NOW + offset), "GET", PATH, now=NOW) is None


def _sig() -> str:
    """The hex signature part of a valid header."""
    return _header().rsplit("sig=", 1)[1]


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        SCHEME,
        f"{SCHEME} ",
        f"{SCHEME} client={CLIENT}",
        f"{SCHEME}  client={CLIENT},ts={int(NOW)},nonce={NONCE},sig=SIG",
        f"{SCHEME} client={CLIENT}, ts={int(NOW)},nonce={NONCE},sig=SIG",
        f"{SCHEME} client={CLIENT},ts={int(NOW)},nonce={NONCE}, sig=SIG",
        f"{SCHEME} client= {CLIENT},ts={int(NOW)},nonce={NONCE},sig=SIG",
        f"{SCHEME} ts={int(NOW)},client={CLIENT},nonce={NONCE},sig=SIG",
        f"{SCHEME} client={CLIENT},ts={int(NOW)},nonce={NONCE},sig=SIG,extra=1",
        f"{SCHEME} client={CLIENT},ts=,nonce={NONCE},sig=SIG",
        f"{SCHEME} client={CLIENT},ts=-{int(NOW)},nonce={NONCE},sig=SIG",
        f"{SCHEME} client={CLIENT},ts={int(NOW)}.0,nonce={NONCE},sig=SIG",
        f"{SCHEME} client=,ts={int(NOW)},nonce={NONCE},sig=SIG",
        f"{SCHEME} client=a b,ts={int(NOW)},nonce={NONCE},sig=SIG",
        f"{SCHEME} client={CLIENT}\n,ts={int(NOW)},nonce={NONCE},sig=SIG",
        f"{SCHEME} client={CLIENT},ts={int(NOW)},nonce={NONCE},sig=SIG\nX-Injected: 1",
        f"{SCHEME} client={CLIENT},ts={int(NOW)},sig=SIG",
        f"{SCHEME} client={CLIENT},ts={int(NOW)},nonce=,sig=SIG",
        f"{SCHEME} client={CLIENT},ts={int(NOW)},nonce={NONCE[:-1]},sig=SIG",
        f"{SCHEME} client={CLIENT},ts={int(NOW)},nonce={NONCE.upper()},sig=SIG",
        f"{SCHEME} client={CLIENT},nonce={NONCE},ts={int(NOW)},sig=SIG",
    ],
)
def test_malformed_header_is_refused(header: str) -> None:
    """Headers that do not have exactly the expected shape are refused, even with a valid signature inside."""
    assert verify(SECRET, header.replace("SIG", _sig()), "GET", PATH, now=NOW) is None


def test_non_hex_signature_is_refused() -> None:
    """A signature with non-hex characters (or upper-case hex) is refused."""
    sig = _sig()
    assert sig != sig.upper()
    assert verify(SECRET, _header().replace(sig, "z" * 64), "GET", PATH, now=NOW) is None
    assert verify(SECRET, _header().replace(sig, sig.upper()), "GET", PATH, now=NOW) is None


@pytest.mark.parametrize("length", [63, 65, 0])
def test_wrong_length_signature_is_refused(length: int) -> None:
    """A signature that is not 64 hex digits is refused."""
    header = _header().replace(_sig(), "a" * length)
    assert verify(SECRET, header, "GET", PATH, now=NOW) is None


def test_overlong_client_id_is_refused() -> None:
    """A client id over 128 characters is refused even when correctly signed."""
    longest = "a" * 128
    assert _sender(_header(client_id=longest)) == longest
    assert verify(SECRET, _header(client_id="a" * 129), "GET", PATH, now=NOW) is None


def test_overlong_timestamp_is_refused() -> None:
    """A timestamp of more than 12 digits is refused before any arithmetic."""
    header = f"{SCHEME} client={CLIENT},ts={'9' * 13},nonce={NONCE},sig={_sig()}"
    assert verify(SECRET, header, "GET", PATH, now=NOW) is None


def test_signature_depends_on_every_field() -> None:
    """Changing any one signed field changes the signature."""
    body = "0" * 64
    base = auth._signature(SECRET, "GET", PATH, int(NOW), CLIENT, NONCE, body)
    variants = {
        auth._signature("x" + SECRET, "GET", PATH, int(NOW), CLIENT, NONCE, body),
        auth._signature(SECRET, "PUT", PATH, int(NOW), CLIENT, NONCE, body),
        auth._signature(SECRET, "GET", PATH + "x", int(NOW), CLIENT, NONCE, body),
        auth._signature(SECRET, "GET", PATH, int(NOW) + 1, CLIENT, NONCE, body),
        auth._signature(SECRET, "GET", PATH, int(NOW), CLIENT + "x", NONCE, body),
        auth._signature(SECRET, "GET", PATH, int(NOW), CLIENT, "f" * 32, body),
        auth._signature(SECRET, "GET", PATH, int(NOW), CLIENT, NONCE, "1" * 64),
    }
    assert base not in variants and len(variants) == 7
