"""Request signing for the peer API: HMAC-SHA256 over method, path, time and sender with the farm secret.

The secret itself never crosses the network, and a captured request is useless after the skew window.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SCHEME = "AIFarm-HMAC"
MAX_SKEW_SECONDS = 120
_HEADER = re.compile(rf"^{SCHEME} client=([A-Za-z0-9._-]{{1,128}}),ts=(\d{{1,12}}),sig=([0-9a-f]{{64}})$")


def _signature(secret: str, method: str, path_qs: str, timestamp: int, client_id: str) -> str:
    message = f"{method.upper()}\n{path_qs}\n{timestamp}\n{client_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path_qs: str, client_id: str, now: float | None = None) -> str:
    """The Authorization header value for one request."""
    timestamp = int(now if now is not None else time.time())
    return f"{SCHEME} client={client_id},ts={timestamp},sig={_signature(secret, method, path_qs, timestamp, client_id)}"


def verify(secret: str, header: str | None, method: str, path_qs: str, now: float | None = None) -> str | None:
    """The sending client's id when the header is a valid, fresh signature of this request; else None."""
    if not header:
        return None
    match = _HEADER.match(header.strip())
    if not match:
        return None
    client_id, timestamp, given = match.group(1), int(match.group(2)), match.group(3)
    current = now if now is not None else time.time()
    if abs(current - timestamp) > MAX_SKEW_SECONDS:
        return None
    expected = _signature(secret, method, path_qs, timestamp, client_id)
    return client_id if hmac.compare_digest(expected, given) else None
