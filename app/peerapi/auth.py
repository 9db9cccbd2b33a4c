"""Request signing for the peer API: HMAC-SHA256 over method, path, time, sender, a nonce and the body's sha256.

The secret itself never crosses the network; a captured request is refused a second time (its nonce was
seen) and useless after the skew window.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

SCHEME = "AIFarm-HMAC"
MAX_SKEW_SECONDS = 120
NONCE_BYTES = 16
MAX_REMEMBERED_NONCES = 100_000
_HEADER = re.compile(
    rf"^{SCHEME} client=([A-Za-z0-9._-]{{1,128}}),ts=(\d{{1,12}}),nonce=([0-9a-f]{{{2 * NONCE_BYTES}}}),sig=([0-9a-f]{{64}})$"
)


Admission = Literal["ok", "replay", "full"]


@dataclass(frozen=True)
class Signed:
    """A verified signature: who sent the request, when, and its one-time nonce."""

    client_id: str
    timestamp: int
    nonce: str


def _signature(secret: str, method: str, path_qs: str, timestamp: int, client_id: str, nonce: str,
               body_sha256: str) -> str:
    message = f"{method.upper()}\n{path_qs}\n{timestamp}\n{client_id}\n{nonce}\n{body_sha256}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path_qs: str, client_id: str, body: bytes = b"", now: float | None = None,
         nonce: str | None = None) -> str:
    """The Authorization header value for one request (a fresh random nonce unless one is given)."""
    timestamp = int(now if now is not None else time.time())
    nonce = nonce or secrets.token_hex(NONCE_BYTES)
    sig = _signature(secret, method, path_qs, timestamp, client_id, nonce, hashlib.sha256(body).hexdigest())
    return f"{SCHEME} client={client_id},ts={timestamp},nonce={nonce},sig={sig}"


def well_formed(header: str | None) -> bool:
    """Whether a header has the scheme's exact shape (checked before the body is read)."""
    return bool(header) and _HEADER.match(header.strip()) is not None  # type: ignore[union-attr]


def verify(secret: str, header: str | None, method: str, path_qs: str, body: bytes = b"",
           now: float | None = None) -> Signed | None:
    """The signature's sender, time and nonce when the header is a valid, fresh signature of this request and
    body; else None. Replays are not detected here (see NonceCache)."""
    if not header:
        return None
    match = _HEADER.match(header.strip())
    if not match:
        return None
    client_id, timestamp, nonce, given = match.group(1), int(match.group(2)), match.group(3), match.group(4)
    current = now if now is not None else time.time()
    if abs(current - timestamp) > MAX_SKEW_SECONDS:
        return None
    expected = _signature(secret, method, path_qs, timestamp, client_id, nonce, hashlib.sha256(body).hexdigest())
    return Signed(client_id, timestamp, nonce) if hmac.compare_digest(expected, given) else None


class NonceCache:
    """Nonces of accepted requests, each kept until its timestamp leaves the skew window; bounded in size."""

    def __init__(self, max_entries: int = MAX_REMEMBERED_NONCES) -> None:
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, nonce = heapq.heappop(self._heap)
            self._expiry.pop(nonce, None)

    def admit(self, signed: Signed, now: float | None = None) -> Admission:
        """'ok' the first time a nonce is seen within its window (it is then remembered), 'replay' after that,
        'full' when the cache holds max_entries live nonces (refused rather than forgetting one)."""
        current = now if now is not None else time.time()
        self._expire(current)
        if signed.nonce in self._expiry:
            return "replay"
        if len(self._expiry) >= self.max_entries:
            return "full"
        expiry = signed.timestamp + MAX_SKEW_SECONDS + 1
        self._expiry[signed.nonce] = expiry
        heapq.heappush(self._heap, (expiry, signed.nonce))
        return "ok"
