"""What every template gets: the CSRF token of the session, the agent's summary, the current path."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.web import security
from app.web.keys import DEPS_KEY, SESSION_KEY_KEY

# A typed request key where aiohttp has them (3.12+); a plain string key on older versions.
SESSION_KEY: Any = web.RequestKey("session_id", str) if hasattr(web, "RequestKey") else "session_id"


async def base_context(request: web.Request) -> dict[str, Any]:
    """The base template context (also used by responses made before the context middleware runs)."""
    deps = request.app[DEPS_KEY]
    session = request.get(SESSION_KEY)
    return {
        "csrf_token": security.csrf_token(request.app[SESSION_KEY_KEY].value, session) if session else "",
        "agent_summary": deps.describe(),
        "path": request.path,
    }
