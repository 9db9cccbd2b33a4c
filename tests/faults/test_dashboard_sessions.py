"""The dashboard's sign-in redirect, sign-out, sign-out-everywhere and static 404s against a real agent."""

from __future__ import annotations

import http.client
import json
import re
import stat
import urllib.parse

import pytest

from app.web import security
from tests.faults.test_adversarial import Dashboard, Farm, farm  # noqa: F401  (farm is a fixture)

pytestmark = pytest.mark.faults

# `next` values that a browser would follow off this site once it drops tab/newline/CR, trims spaces and reads a
# backslash as a slash; each is sent percent-encoded in the query, as a link would carry it.
EVIL_NEXT = ["/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "/%09/evil.example", "/%0A/evil.example",
             "//evil.example", "/\\evil.example", "/%5Cevil.example", "/%2F/evil.example", "%2F%2Fevil.example",
             " //evil.example", "\t//evil.example", "https://evil.example/", "javascript:alert(1)", "evil.example",
             "/\t\\evil.example", "/ /evil.example", "/\x00/evil.example", "/%00/evil.example"]


def signed_in(farm: Farm) -> Dashboard:  # noqa: F811
    """A fresh dashboard client with a session of its own."""
    dashboard = Dashboard(farm)
    dashboard.sign_in()
    return dashboard


def cleared(reply_headers: http.client.HTTPMessage) -> bool:
    """True when the response deletes the session cookie."""
    values = reply_headers.get_all("Set-Cookie") or []
    return any(re.match(r'aifarm_session=("")?;', v) and re.search(r"max-age=0", v, re.IGNORECASE) for v in values)


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_login_next_that_leads_off_site_goes_home(farm: Farm, target: str) -> None:  # noqa: F811
    """A sign-in link whose next= a browser would read as another site redirects to '/' (and still signs in)."""
    dashboard = Dashboard(farm)
    reply = dashboard.request("GET", dashboard.login_link() + "&next=" + urllib.parse.quote(target, safe="%/"))
    assert reply.status == 303 and reply.headers["Location"] == "/", (target, reply.status, reply.headers["Location"])
    assert "aifarm_session=" in reply.headers.get("Set-Cookie", "")


def test_login_next_on_this_site_is_kept(farm: Farm) -> None:  # noqa: F811
    """Control: a plain path with a query is where the sign-in goes."""
    dashboard = Dashboard(farm)
    reply = dashboard.request("GET", dashboard.login_link() + "&next=" + urllib.parse.quote("/tasks?status=running"))
    assert reply.status == 303 and reply.headers["Location"] == "/tasks?status=running"


def test_sign_out_needs_csrf_and_clears_the_cookie(farm: Farm) -> None:  # noqa: F811
    """Every page header has a sign-out form; posting it without the CSRF token changes nothing, with it the
    session cookie is cleared, so the browser is signed out; the API token keeps working."""
    dashboard = signed_in(farm)
    page = dashboard.request("GET", "/tasks", cookie=True).text
    assert re.search(r'<form method="post" action="/logout"[^>]*>\s*<input type="hidden" name="csrf_token" value="'
                     + re.escape(dashboard.csrf or ""), page), "no sign-out form in the page header"
    refused = dashboard.request("POST", "/logout", cookie=True, form={"csrf_token": "0" * 64})
    assert refused.status == 403 and not cleared(refused.headers)
    assert dashboard.request("GET", "/tasks", cookie=True).status == 200
    out = dashboard.request("POST", "/logout", cookie=True, form={"csrf_token": dashboard.csrf or ""})
    assert out.status == 200 and cleared(out.headers), (out.status, out.headers.get_all("Set-Cookie"))
    assert "signed out" in out.text and 'action="/logout"' not in out.text
    assert dashboard.request("GET", "/tasks").status == 401  # the browser, its cookie gone
    assert dashboard.request("GET", "/api/v1/status", bearer=True).status == 200


def test_sign_out_everywhere_refuses_every_old_cookie_but_not_the_api_token(farm: Farm) -> None:  # noqa: F811
    """Sign out everywhere rotates the 0600 session key: this browser's and another browser's cookies (kept copies)
    open nothing any more, page or API; the API token still works and a new sign-in does too."""
    first, second = signed_in(farm), signed_in(farm)
    key_file = farm.data_dir / "session_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    old_key = key_file.read_text()
    settings = first.request("GET", "/settings", cookie=True).text
    assert 'action="/settings/sign-out-everywhere"' in settings
    refused = first.request("POST", "/settings/sign-out-everywhere", cookie=True, form={"csrf_token": "0" * 64})
    assert refused.status == 403 and key_file.read_text() == old_key
    out = first.request("POST", "/settings/sign-out-everywhere", cookie=True, form={"csrf_token": first.csrf or ""})
    assert out.status == 200 and cleared(out.headers)
    assert key_file.read_text() != old_key and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for client in (first, second):  # each still sends its old cookie, as a copied cookie would be
        assert client.request("GET", "/tasks", cookie=True).status == 401
        api = client.request("GET", "/api/v1/status", cookie=True)
        assert api.status == 401 and json.loads(api.body)["error"]["code"] == "unauthorized"
        post = client.request("POST", "/api/v1/pause", cookie=True, body=b"{}", headers={"X-CSRF-Token": client.csrf or ""})
        assert post.status == 401
    assert not first.paused()
    assert first.request("GET", "/api/v1/status", bearer=True).status == 200
    again = signed_in(farm)
    assert again.request("GET", "/tasks", cookie=True).status == 200


def test_sessions_are_not_signed_with_the_api_token(farm: Farm) -> None:  # noqa: F811
    """A cookie made with the API token (which CLI scripts hold) is not a session."""
    forged = security.make_session(farm.agent.api_token)
    reply = Dashboard(farm).request("GET", "/tasks", headers={"Cookie": f"aifarm_session={forged}"})
    assert reply.status == 401


@pytest.mark.parametrize("path", ["/static/x.css", "/static/js/nope.js", "/static/css/", "/static/../api_token"])
def test_missing_static_file_is_a_plain_text_404_with_security_headers(farm: Farm, path: str) -> None:  # noqa: F811
    """A static file that is not there: 404, a one-line text/plain body naming it, and the CSP with its companions."""
    reply = Dashboard(farm).request("GET", path)
    assert reply.status in (403, 404), (path, reply.status)
    if reply.status == 404:
        assert reply.headers.get_content_type() == "text/plain", (path, reply.headers["Content-Type"])
        assert reply.text == f"404: not found: {urllib.parse.unquote(path)}", reply.text
    assert "script-src 'self'" in reply.headers.get("Content-Security-Policy", "")
    assert reply.headers.get("X-Content-Type-Options") == "nosniff" and reply.headers.get("X-Frame-Options") == "DENY"
    assert farm.protected["api_token"] not in reply.text
