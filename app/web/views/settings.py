"""The Settings page: the volunteer's donation controls and preferences, the effective settings and the farm."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from app.config import SPEC_BY_NAME, DurationRange, settings_as_dict
from app.errors import ValidationError
from app.prefs import PREFS, WHOLE, Pref, apply_prefs, describe_prefs
from app.web.keys import DEPS_KEY
from app.web.views.bundles import bundle_keys

PAUSE_MODES = {"now": None, "hour": 3600.0, "finish": None}
CHECKED = ("true", "on", "1", "yes")


@dataclass
class PrefsForm:
    """What the preferences form sent: the values typed, the changes they make, and the problems found."""

    typed: dict[str, str] = field(default_factory=dict)
    changes: dict[str, str | None] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PrefField:
    """One field of the preferences form: the preference and what the field shows."""

    pref: Pref
    text: str
    checked: bool


def read_prefs_form(current: Mapping[str, Pref], posted: MultiDictProxy[Any]) -> PrefsForm:
    """The changes a posted form makes; a preference absent from the form stays as it is, one set by the environment
    or a flag may not change."""
    form = PrefsForm()
    for name in PREFS:
        pref = current[name]
        sent = [str(item) for item in posted.getall(name, [])]
        if not sent:
            continue
        if pref.checkbox:
            # The form sends a hidden "false" before the checkbox, so that an unchecked box still says so.
            on = any(item.strip().lower() in CHECKED for item in sent)
            form.typed[name] = "true" if on else "false"
            if on == pref.checked:
                continue
            wanted: str | None = form.typed[name]
        else:
            form.typed[name] = sent[-1].strip()
            if form.typed[name] == pref.text:
                continue
            wanted = form.typed[name] or None
        if pref.locked_by:
            form.errors[name] = [f"cannot be changed here: {pref.locked_by}"]
        else:
            form.changes[name] = wanted
    return form


def _page_context(request: web.Request, form: PrefsForm | None = None, message: str = "") -> dict[str, Any]:
    deps = request.app[DEPS_KEY]
    typed = form.typed if form else {}
    prefs = []
    for pref in describe_prefs(deps.settings):
        shown = typed.get(pref.name, pref.text)
        prefs.append(PrefField(pref, shown, pref.checkbox and shown == "true"))
    rows = []
    for name, value in sorted(settings_as_dict(deps.settings).items()):
        spec = SPEC_BY_NAME.get(name)
        rows.append({"name": name, "value": value, "help": spec.help if spec else "",
                     "duration": spec is not None and isinstance(spec.parse, DurationRange) and isinstance(value, (int, float))})
    return {"donation": deps.donation.state(), "work": deps.work(),
            "settings": rows, "farm_name": deps.settings.farm_name,
            "database": deps.db.display_url, "embedded": deps.settings.database_url is None,
            "prefs": prefs, "errors": form.errors if form else {}, "prefs_message": message,
            "whole_errors": [],
            "saved": "saved" in request.query and form is None}


async def settings_page(request: web.Request) -> web.Response:
    """Donation state with its controls, the preferences form, every effective setting, and how to join or leave."""
    context = {**_page_context(request), "bundle_keys": await bundle_keys(request.app[DEPS_KEY])}
    return aiohttp_jinja2.render_template("settings.html", request, context)


async def save_prefs(request: web.Request) -> web.StreamResponse:
    """Check and write the preferences, have the agent apply them, and back to the settings (303); or the page
    again (400) with each problem next to its field, every typed value kept and nothing written."""
    deps = request.app[DEPS_KEY]
    current = {pref.name: pref for pref in describe_prefs(deps.settings)}
    form = read_prefs_form(current, await request.post())
    if not form.errors and form.changes:
        problems = await asyncio.to_thread(apply_prefs, deps.settings.data_dir, form.changes)
        for name, problem in problems.items():
            form.errors.setdefault(name, []).append(problem)
    if form.errors:
        whole = form.errors.pop(WHOLE, [])
        count = sum(len(v) for v in form.errors.values()) + len(whole)
        message = f"The preferences were not saved: {count} problem{'s' if count != 1 else ''} to fix."
        context = {**_page_context(request, form, message), "whole_errors": whole,
                   "bundle_keys": await bundle_keys(deps)}
        return aiohttp_jinja2.render_template("settings.html", request, context, status=400)
    if form.changes:
        await deps.donation.reload_settings()
    raise web.HTTPSeeOther("/settings?saved=1")


async def pause(request: web.Request) -> web.StreamResponse:
    """Pause now, for an hour, or after the current task; then back to the settings."""
    deps = request.app[DEPS_KEY]
    mode = str((await request.post()).get("mode", "now"))
    if mode not in PAUSE_MODES:
        raise ValidationError(f"unknown pause mode {mode!r}", {"mode": "must be now, hour or finish"})
    await deps.donation.pause(seconds=PAUSE_MODES[mode], finish_current=mode == "finish")
    raise web.HTTPSeeOther("/settings")


async def resume(request: web.Request) -> web.StreamResponse:
    """Donate again; then back to the settings."""
    await request.app[DEPS_KEY].donation.resume()
    raise web.HTTPSeeOther("/settings")
