"""Dashboard authentication: one-time login links, signed session cookies, CSRF tokens, safe redirects,
security headers.

Sessions are stateless: the cookie is an issue time signed with the data dir's session key (not the API
token), so it survives an agent restart (live pages reconnect) and dies when the key is rotated ("sign out
everywhere") while the API token keeps working.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from app.runtime_files import load_or_create_session_key, rotate_session_key

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


@dataclass
class SessionKey:
    """The data dir's session signing key, loaded once and replaced by `rotate`."""

    data_dir: Path
    value: str = ""

    def __post_init__(self) -> None:
        self.value = load_or_create_session_key(self.data_dir)

    def rotate(self) -> None:
        """A new key: every session cookie issued so far is refused from now on."""
        self.value = rotate_session_key(self.data_dir)


def safe_next(target: str | None) -> str:
    """`target` when it can only mean a path on this dashboard; otherwise '/'.

    Browsers drop tab, newline and CR anywhere in a URL, trim spaces and read a backslash as a slash, so a
    tab between two slashes or a backslash after one leads off-site: any whitespace, control character or
    backslash, raw or percent-decoded, is refused, and so is anything with a scheme or a host.
    """
    if not target:
        return "/"
    for text in (target, urllib.parse.unquote(target)):
        if any(ord(ch) <= 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in text):
            return "/"
        if not text.startswith("/") or text.startswith("//"):
            return "/"
        parts = urllib.parse.urlsplit(text)
        if parts.scheme or parts.netloc:
            return "/"
    return target


def make_session(key: str, now: float | None = None) -> str:
    """A new session cookie value."""
    issued = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(8)
    return f"{issued}.{nonce}.{_sign(key, 'session', f'{issued}.{nonce}')}"


def check_session(key: str, cookie: str | None, now: float | None = None) -> str | None:
    """The session id when the cookie is genuine and not expired; else None."""
    if not cookie or cookie.count(".") != 2:
        return None
    issued, nonce, signature = cookie.split(".")
    if not issued.isdigit() or not hmac.compare_digest(signature, _sign(key, "session", f"{issued}.{nonce}")):
        return None
    current = now if now is not None else time.time()
    if not 0 <= current - int(issued) <= SESSION_MAX_AGE:
        return None
    return f"{issued}.{nonce}"


def csrf_token(key: str, session_id: str) -> str:
    """The CSRF token bound to one session."""
    return _sign(key, "csrf", session_id)


def check_csrf(key: str, session_id: str, given: str | None) -> bool:
    """True when the form field or header carries this session's CSRF token."""
    return bool(given) and hmac.compare_digest(str(given), csrf_token(key, session_id))


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
