"""Dashboard authentication: one-time login links, signed session cookies, CSRF tokens, security headers.

Sessions are stateless: the cookie is an issue time signed with the data dir's API token, so it
survives an agent restart (live pages reconnect) and dies when the token file is replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

SESSION_COOKIE = "aifarm_session"
SESSION_MAX_AGE = 30 * 86400
LOGIN_LINK_TTL = 15 * 60
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _sign(key: str, purpose: str, value: str) -> str:
    return hmac.new(key.encode(), f"{purpose}\n{value}".encode(), hashlib.sha256).hexdigest()


def make_session(api_token: str, now: float | None = None) -> str:
    """A new session cookie value."""
    issued = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(8)
    return f"{issued}.{nonce}.{_sign(api_token, 'session', f'{issued}.{nonce}')}"


def check_session(api_token: str, cookie: str | None, now: float | None = None) -> str | None:
    """The session id when the cookie is genuine and not expired; else None."""
    if not cookie or cookie.count(".") != 2:
        return None
    issued, nonce, signature = cookie.split(".")
    if not issued.isdigit() or not hmac.compare_digest(signature, _sign(api_token, "session", f"{issued}.{nonce}")):
        return None
    current = now if now is not None else time.time()
    if not 0 <= current - int(issued) <= SESSION_MAX_AGE:
        return None
    return f"{issued}.{nonce}"


def csrf_token(api_token: str, session_id: str) -> str:
    """The CSRF token bound to one session."""
    return _sign(api_token, "csrf", session_id)


def check_csrf(api_token: str, session_id: str, given: str | None) -> bool:
    """True when the form field or header carries this session's CSRF token."""
    return bool(given) and hmac.compare_digest(str(given), csrf_token(api_token, session_id))


@dataclass
class LoginLinks:
    """One-time login tokens handed out by `aifarm run`, the tray and `aifarm dashboard`."""

    ttl: float = LOGIN_LINK_TTL
    _tokens: dict[str, float] = field(default_factory=dict)

    def issue(self) -> str:
        """A new one-time token."""
        self._expire()
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.ttl
        return token

    def redeem(self, token: str | None) -> bool:
        """True once for a valid token; the token is gone afterwards."""
        self._expire()
        if not token:
            return False
        for known in list(self._tokens):
            if hmac.compare_digest(known, token):
                del self._tokens[known]
                return True
        return False

    def _expire(self) -> None:
        now = time.monotonic()
        for token, deadline in list(self._tokens.items()):
            if deadline < now:
                del self._tokens[token]
