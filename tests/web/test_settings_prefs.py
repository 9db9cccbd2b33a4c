"""The Settings page's preferences form against a real agent process: CSRF, saving, per-field errors, env-set values."""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent.harness import AgentProcess
from tests.training.e2e import sync, upgraded
from tests.web.test_pages import Browser, _own_farm

ENV = {"AIFARM_CPU_THREADS": "2", "AIFARM_PAUSED": "true"}  # paused: it claims nothing


@dataclass
class Prefs:
    """A running agent with cpu_threads and paused fixed by its environment, and a browser signed in to it."""

    agent: AgentProcess
    browser: Browser

    @property
    def config(self) -> Path:
        """The data dir's config.toml."""
        return self.agent.data_dir / "config.toml"

    def file(self) -> str:
        """The config.toml's text ('' when there is none)."""
        return self.config.read_text() if self.config.exists() else ""

    def form(self, **changes: str) -> dict[str, str]:
        """The form as the page sends it, unchanged, plus `changes`."""
        body = self.browser.get("/settings").body
        form_html = body[body.index('action="/settings/prefs"'):]
        form_html = form_html[:form_html.index("</form>")]
        fields: dict[str, str] = {}
        for tag in re.findall(r"<input\b[^>]*>", form_html):
            if " disabled" in tag:
                continue
            name = re.search(r'name="([^"]+)"', tag)
            value = re.search(r'value="([^"]*)"', tag)
            if name is None:
                continue
            if 'type="checkbox"' in tag and " checked" not in tag:
                continue
            fields[name.group(1)] = html.unescape(value.group(1) if value else "")
        return {**fields, **changes}


@pytest.fixture(scope="module")
def prefs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prefs]:
    """One agent started with AIFARM_CPU_THREADS and AIFARM_PAUSED, on its own SQLite farm."""
    tmp = tmp_path_factory.mktemp("prefs")
    url = f"sqlite:///{tmp / 'farm.sqlite3'}"
    sync(upgraded(url))
    agent = AgentProcess(tmp, "agent", "--database-url", url, *_own_farm(), env=ENV)
    try:
        yield Prefs(agent, Browser(agent))
    finally:
        agent.stop()


def _effective(body: str, name: str) -> str:
    """The value cell of a setting in the page's effective settings table."""
    match = re.search(rf'<tr data-setting="{name}">\s*<td>.*?</td>\s*<td>(.*?)</td>', body, re.DOTALL)
    assert match, name
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_settings_prefs_form_shows_each_preference_with_its_origin(prefs: Prefs) -> None:
    """One field per preference with value, help and origin; env-set ones are read-only and say why."""
    body = prefs.browser.get("/settings").body
    for name in ("paused", "cpu_threads", "ram_limit_mb", "gpu_memory_limit_mb", "gpus", "idle_only", "idle_minutes",
                 "schedule", "pause_on_battery", "max_gpu_temperature"):
        assert f'id="f-{name}"' in body and f'id="origin-{name}"' in body, name
    assert re.search(r'id="f-cpu_threads" name="cpu_threads" value="2"[^>]*disabled', body)
    assert re.search(r'id="f-paused" name="paused" value="true" checked disabled', body)
    assert "set by the environment variable AIFARM_CPU_THREADS, read-only here" in body
    assert re.search(r'id="f-idle_minutes" name="idle_minutes" value="5"[^>]*>', body)
    assert re.search(r'data-origin="default"[^>]*>from default</small>', body)
    assert "Minutes without input before the computer counts as idle." in body


def test_settings_prefs_post_without_csrf_is_refused_and_writes_nothing(prefs: Prefs) -> None:
    """403 without (or with a wrong) csrf_token; config.toml untouched."""
    before = prefs.file()
    form = prefs.form(idle_minutes="42")
    del form["csrf_token"]
    response = prefs.browser.post("/settings/prefs", form)
    assert response.status == 403 and "CSRF" in response.body
    assert prefs.browser.post("/settings/prefs", {**form, "csrf_token": "0" * 64}).status == 403
    assert prefs.file() == before and "42" not in prefs.file()


def test_settings_prefs_valid_change_is_written_and_applied(prefs: Prefs) -> None:
    """303 to /settings; config.toml holds the change; the agent applied it; an emptied field goes back to the default."""
    response = prefs.browser.post("/settings/prefs", prefs.form(idle_minutes="7", ram_limit_mb="4096", gpus="0, 1",
                                                                pause_on_battery="false"))
    assert response.status == 303, response.body[:2000]
    assert response.location == "/settings?saved=1"
    written = tomllib.loads(prefs.file())
    assert written == {"idle_minutes": 7, "ram_limit_mb": 4096, "gpus": [0, 1], "pause_on_battery": False}
    page = prefs.browser.get(response.location).body
    assert "Preferences saved" in page
    assert _effective(page, "idle_minutes") == "7" and _effective(page, "ram_limit_mb") == "4096"
    assert _effective(page, "pause_on_battery") == "false" and _effective(page, "gpus") == "[0, 1]"
    assert re.search(r'id="f-idle_minutes" name="idle_minutes" value="7"', page)
    assert re.search(r'data-origin="file" title="[^"]*config.toml">from file</small>', page)

    again = prefs.browser.post("/settings/prefs", prefs.form(ram_limit_mb="", gpus="all"))
    assert again.status == 303
    assert tomllib.loads(prefs.file()) == {"idle_minutes": 7, "pause_on_battery": False}
    assert _effective(prefs.browser.get("/settings").body, "ram_limit_mb") == "not set"


def test_settings_prefs_bad_values_are_shown_per_field_and_nothing_is_written(prefs: Prefs) -> None:
    """400: each problem next to its field, the typed values kept, config.toml unchanged."""
    before = prefs.file()
    response = prefs.browser.post("/settings/prefs", prefs.form(ram_limit_mb="lots", schedule="someday 25:00",
                                                                idle_minutes="9"))
    assert response.status == 400
    body = response.body
    assert "The preferences were not saved: 2 problems to fix." in body
    assert re.search(r'id="f-ram_limit_mb" name="ram_limit_mb" value="lots"[^>]*aria-invalid="true"', body)
    assert re.search(r'id="err-ram_limit_mb">\s*<li>expected a whole number</li>', body)
    assert 'id="err-schedule"' in body and 'value="someday 25:00"' in body
    assert 'id="err-idle_minutes"' not in body and 'value="9"' in body
    assert prefs.file() == before
    assert _effective(prefs.browser.get("/settings").body, "idle_minutes") == "7"


def test_settings_prefs_env_set_value_cannot_be_changed_from_the_page(prefs: Prefs) -> None:
    """A POST changing a preference fixed by AIFARM_* is refused for that field; nothing else is written either."""
    before = prefs.file()
    response = prefs.browser.post("/settings/prefs", prefs.form(cpu_threads="5", idle_minutes="11"))
    assert response.status == 400
    assert re.search(r'id="err-cpu_threads">\s*<li>cannot be changed here: set by the environment variable '
                     r'AIFARM_CPU_THREADS</li>', response.body)
    paused = prefs.browser.post("/settings/prefs", prefs.form(paused="false"))
    assert paused.status == 400 and 'id="err-paused"' in paused.body
    assert prefs.file() == before
    status = prefs.agent.api("/api/v1/status")
    assert status["donation"]["paused"] is True
    page = prefs.browser.get("/settings").body
    assert _effective(page, "cpu_threads") == "2" and _effective(page, "idle_minutes") == "7"


def test_settings_prefs_a_broken_settings_file_is_named_and_left_as_it_was(prefs: Prefs) -> None:
    """When the merged settings would not load (the file was edited by hand meanwhile), the page says why and the
    file keeps every byte."""
    before = prefs.file()
    broken = before + 'colour = "blue"  # hand-written\n'
    prefs.config.write_text(broken)
    try:
        response = prefs.browser.post("/settings/prefs", prefs.form(idle_minutes="12"))
        assert response.status == 400
        assert "The preferences were not saved: 1 problem to fix." in response.body
        assert "unknown setting &#39;colour&#39;" in response.body
        assert prefs.file() == broken
    finally:
        prefs.config.write_text(before)
    assert _effective(prefs.browser.get("/settings").body, "idle_minutes") == "7"
