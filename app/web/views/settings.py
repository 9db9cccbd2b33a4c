"""The Settings page: the volunteer's donation controls, the effective settings and the farm."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from app.config import SPEC_BY_NAME, DurationRange, settings_as_dict
from app.errors import ValidationError
from app.web.keys import AGENT_KEY

PAUSE_MODES = {"now": None, "hour": 3600.0, "finish": None}


async def settings_page(request: web.Request) -> web.Response:
    """Donation state with its controls, every effective setting, and how to join or leave a farm."""
    agent = request.app[AGENT_KEY]
    rows = []
    for name, value in sorted(settings_as_dict(agent.settings).items()):
        spec = SPEC_BY_NAME.get(name)
        rows.append({"name": name, "value": value, "help": spec.help if spec else "",
                     "duration": spec is not None and isinstance(spec.parse, DurationRange) and isinstance(value, (int, float))})
    context = {"donation": agent.donation_state(), "work": agent.scheduler.describe(),
               "settings": rows, "farm_name": agent.settings.farm_name,
               "database": agent.db.display_url, "embedded": agent.settings.database_url is None}
    return aiohttp_jinja2.render_template("settings.html", request, context)


async def pause(request: web.Request) -> web.StreamResponse:
    """Pause now, for an hour, or after the current task; then back to the settings."""
    agent = request.app[AGENT_KEY]
    mode = str((await request.post()).get("mode", "now"))
    if mode not in PAUSE_MODES:
        raise ValidationError(f"unknown pause mode {mode!r}", {"mode": "must be now, hour or finish"})
    await agent.pause(seconds=PAUSE_MODES[mode], finish_current=mode == "finish")
    raise web.HTTPSeeOther("/settings")


async def resume(request: web.Request) -> web.StreamResponse:
    """Donate again; then back to the settings."""
    await request.app[AGENT_KEY].resume()
    raise web.HTTPSeeOther("/settings")
