"""A real browser (Debian's chromium through Playwright) changes the preferences on the Settings page of a real agent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.agent.harness import AgentProcess, agent_env
from tests.training.e2e import sync, upgraded
from tests.web.test_browser import CHROMIUM, LAUNCH_ARGS, SCREENSHOTS, Watcher, _shot

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright from PyPI (pip install playwright)")

pytestmark = pytest.mark.slow


def _cli_prefs(tmp_path: Path, agent: AgentProcess) -> dict[str, Any]:
    """`aifarm prefs --json` on the agent's data dir, as a volunteer would run it."""
    result = subprocess.run([sys.executable, "-m", "app", "prefs", "--json", "--data-dir", str(agent.data_dir)],
                            env=agent_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _effective(page: Any, name: str) -> str:
    return str(page.locator(f'tr[data-setting="{name}"] td').nth(1).inner_text()).strip()


def test_settings_page_changes_preferences_and_shows_errors(tmp_path: Path, sqlite_url: str) -> None:
    """cpu_threads, idle_only and paused changed on the page: saved, seen by `aifarm prefs`, applied by the running
    agent at once; a bad value is shown next to its field and nothing changes."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    sync(upgraded(sqlite_url))
    agent = AgentProcess(tmp_path, "agent", "--database-url", sqlite_url, "--farm-name", f"web-{uuid.uuid4().hex[:10]}")
    config = agent.data_dir / "config.toml"
    watcher = Watcher()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            try:
                page = watcher.attach(browser.new_context(viewport={"width": 1280, "height": 900}).new_page())
                page.goto(agent.signin_url)
                page.click("nav >> text=Settings")
                page.wait_for_url(re.compile(r"/settings$"))
                assert page.input_value("#f-cpu_threads") == "" and not page.is_checked("#f-idle_only")
                assert page.locator("#origin-cpu_threads").inner_text() == "from default"
                assert page.locator("[data-donation-summary]").inner_text() == "donating"

                page.fill("#f-cpu_threads", "3")
                page.check("#f-idle_only")
                page.check("#f-paused")
                _shot(page, "settings-prefs-form")
                page.click("button:has-text('Save preferences')")
                page.wait_for_url(re.compile(r"/settings\?saved=1$"))
                saved_at = time.monotonic()
                assert page.locator("[data-prefs-saved]").is_visible()
                assert page.input_value("#f-cpu_threads") == "3" and page.is_checked("#f-idle_only")
                assert page.locator("#origin-cpu_threads").inner_text() == "from file"
                # What the running agent now uses, read from it again, not from the form just sent.
                fresh = page.context.request.get(agent.url.rstrip("/") + "/settings").text()
                assert re.search(r'<tr data-setting="cpu_threads">\s*<td>.*?</td>\s*<td><code>3</code>', fresh, re.DOTALL)
                assert re.search(r'<tr data-setting="idle_only">\s*<td>.*?</td>\s*<td>true', fresh, re.DOTALL)
                assert agent.api("/api/v1/status")["donation"]["paused"] is True
                assert time.monotonic() - saved_at < 1.0
                assert page.locator("[data-donation-summary]").inner_text() == "paused"
                assert _effective(page, "cpu_threads") == "3" and _effective(page, "idle_only") == "true"
                _shot(page, "settings-prefs-saved")

                cli = _cli_prefs(tmp_path, agent)
                assert cli["cpu_threads"] == 3 and cli["idle_only"] is True and cli["paused"] is True
                written = config.read_bytes()

                page.fill("#f-cpu_threads", "lots")
                page.fill("#f-idle_minutes", "-3")
                page.uncheck("#f-idle_only")
                watcher.active = False  # chromium logs the form's intended 400 answer as a console error
                page.click("button:has-text('Save preferences')")
                page.locator("#err-cpu_threads").wait_for()
                watcher.active = True
                assert page.locator("#err-cpu_threads").inner_text() == "expected a whole number"
                assert page.locator("#err-idle_minutes").inner_text() == "must be between 1 and 1440"
                # Each error sits inside its own field's box, right under the input.
                assert page.locator('[data-pref="cpu_threads"] #err-cpu_threads').is_visible()
                assert page.locator('[data-pref="idle_minutes"] #err-idle_minutes').is_visible()
                assert page.input_value("#f-cpu_threads") == "lots" and page.input_value("#f-idle_minutes") == "-3"
                assert not page.is_checked("#f-idle_only")
                assert "2 problems to fix" in page.locator("[data-prefs-alert]").inner_text()
                _shot(page, "settings-prefs-error")
                assert config.read_bytes() == written
                assert _effective(page, "cpu_threads") == "3" and _effective(page, "idle_only") == "true"
                cli = _cli_prefs(tmp_path, agent)
                assert cli["cpu_threads"] == 3 and cli["idle_only"] is True and cli["idle_minutes"] == 5
                assert watcher.problems == []
            finally:
                browser.close()
    finally:
        agent.stop()
