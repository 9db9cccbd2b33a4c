"""A real browser (Debian's chromium through Playwright) on a real agent: submit, watch a task train live, every page."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.agent.harness import AgentProcess
from tests.training.e2e import sync, upgraded

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright from PyPI (pip install playwright)")

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
TRAIN_TIMEOUT = 240.0
# Sized to train for roughly 15-30 s on a 2-core machine, so that several live updates arrive on the way.
MODEL_OPTIONS = {"hidden": [256, 256]}
DATASET_OPTIONS = {"samples": 40000, "features": 32, "classes": 8, "noise": 5.0}
EPOCHS = "10"


class Watcher:
    """Console errors, page errors and failed requests of every page of a browser context."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.active = True

    def attach(self, page: Any) -> Any:
        """Record what goes wrong on this page; returns it."""
        page.on("console", lambda msg: self._note(f"console {msg.type}: {msg.text} ({page.url})")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self._note(f"page error: {exc} ({page.url})"))
        return page

    def _note(self, text: str) -> None:
        if self.active:
            self.problems.append(text)


def _shot(page: Any, name: str) -> None:
    page.evaluate("() => window.scrollTo(0, 0)")  # the sticky top bar would show mid-page otherwise
    page.wait_for_timeout(300)  # let charts and live values settle
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _live_state(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => ({
        status: document.querySelector('[data-task-status]').textContent.trim(),
        progress: Number(document.querySelector('.progress-big progress').value),
        points: Number(document.querySelector('[data-chart="loss"] svg').getAttribute('data-count')),
        logs: document.querySelectorAll('[data-task-log] li').length,
        checkpoints: document.querySelectorAll('[data-checkpoints] tr').length,
        navigations: performance.getEntriesByType('navigation').length,
        marker: window.__notReloaded === true,
    })""")


def _increasing(values: list[float]) -> bool:
    return all(b >= a for a, b in zip(values, values[1:], strict=False)) and len(set(values)) >= 3


def test_submit_watch_live_and_visit_every_page(tmp_path: Path, sqlite_url: str) -> None:
    """Submit through the form, watch progress and chart grow without reloading, then screenshot every page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    sync(upgraded(sqlite_url))
    agent = AgentProcess(tmp_path, "agent", "--database-url", sqlite_url, "--heartbeat-interval", "1s",
                         "--farm-name", f"web-{uuid.uuid4().hex[:10]}")  # no peers from other tests
    watcher = Watcher()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = watcher.attach(context.new_page())
                page.goto(agent.signin_url)
                assert re.fullmatch(r"http://[^/]+/", page.url), page.url
                assert page.locator("h1").inner_text() == "Overview"
                _shot(page, "overview-empty")

                page.click("nav >> text=Tasks")
                page.click("text=Submit a task")
                page.fill("#f-name", "bad name!")
                page.fill("#f-batch_size", "zero")
                page.fill("#f-dataset_options", "{oops")
                watcher.active = False  # chromium logs the form's intended 400 answer as a console error
                page.click("button:has-text('Submit task')")
                page.locator("#err-name").wait_for()
                watcher.active = True
                assert page.locator("#err-name").is_visible() and page.locator("#err-batch_size").is_visible()
                assert page.locator("#err-dataset_options").is_visible()
                assert page.input_value("#f-batch_size") == "zero"
                _shot(page, "task-new-errors")
                page.fill("#f-name", "browser-mlp")
                page.select_option("#f-model", "mlp")
                page.select_option("#f-dataset", "synthetic")
                page.fill("#f-batch_size", "32")
                page.fill("#f-learning_rate", "0.01")
                page.fill("#f-epochs", EPOCHS)
                page.fill("#f-model_options", json.dumps(MODEL_OPTIONS))
                page.fill("#f-dataset_options", json.dumps(DATASET_OPTIONS))
                page.fill("#f-min_cpu_cores", "1")
                page.click("details.advanced > summary")
                page.fill("#f-checkpoint_interval", "200 steps")
                _shot(page, "task-new")
                page.click("button:has-text('Submit task')")
                page.wait_for_url(re.compile(r"/tasks/\d+$"))
                task_id = int(page.url.rsplit("/", 1)[1])

                page.click("nav >> text=Tasks")
                row = page.locator(f"tr[data-task-row='{task_id}']")
                assert "browser-mlp" in row.inner_text()
                row.locator("a.strong").click()
                page.wait_for_url(re.compile(rf"/tasks/{task_id}$"))
                page.evaluate("() => { window.__notReloaded = true; }")

                seen: list[dict[str, Any]] = []
                deadline = time.monotonic() + TRAIN_TIMEOUT
                while time.monotonic() < deadline:
                    state = _live_state(page)
                    assert state["marker"], "the task page was reloaded"
                    if not seen or state != seen[-1]:
                        seen.append(state)
                    if state["status"] in ("completed", "failed", "error"):
                        break
                    page.wait_for_timeout(500)
                assert seen[-1]["status"] == "completed", (seen[-1], agent.log()[-3000:])
                page.wait_for_timeout(2500)  # the last SSE event carries the final points and log lines
                final = _live_state(page)
                progress = [s["progress"] for s in seen] + [final["progress"]]
                points = [s["points"] for s in seen] + [final["points"]]
                assert _increasing(progress) and progress[-1] == 100, progress
                assert _increasing(points) and points[-1] >= 5, points
                assert final["logs"] > 3 and final["checkpoints"] > 0 and final["marker"]
                assert page.locator("[data-ranks] [data-rank-status]").first.inner_text() == "completed"
                assert page.locator("form[action$='/cancel']").is_hidden()
                assert page.locator("form[action$='/retry']").is_hidden()
                _shot(page, "task-live")

                page.reload()
                assert page.locator("span.tag", has_text=re.compile(r"^final$")).first.is_visible()  # the final checkpoint
                _shot(page, "task")

                pages = {"overview": "/", "tasks": "/tasks", "clients": "/clients",
                         "client": f"/clients/{agent.client_id}", "models": "/models", "operations": "/operations",
                         "settings": "/settings", "about": "/about"}
                for name, path in pages.items():
                    page.goto(agent.url.rstrip("/") + path)
                    assert page.locator("h1").count() == 1, name
                    _shot(page, name)
                models = page.context.request.get(agent.url.rstrip("/") + "/models")
                link = re.search(r'href="(/models/\d+/download)"', models.text())
                assert link, "no download link for the trained model"
                download = page.context.request.get(agent.url.rstrip("/") + link.group(1))
                assert download.status == 200 and len(download.headers["x-content-sha256"]) == 64

                narrow = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                             is_mobile=True, has_touch=True)
                narrow.add_cookies(context.cookies())
                small = watcher.attach(narrow.new_page())
                for name, path in {"overview-narrow": "/", "task-narrow": f"/tasks/{task_id}", "about-narrow": "/about"}.items():
                    small.goto(agent.url.rstrip("/") + path)
                    width = small.evaluate("() => document.documentElement.scrollWidth")
                    assert width <= 390, f"{name} scrolls sideways ({width} px)"
                    _shot(small, name)

                dark = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
                dark.add_cookies(context.cookies())
                night = watcher.attach(dark.new_page())
                for name, path in {"overview-dark": "/", "task-dark": f"/tasks/{task_id}"}.items():
                    night.goto(agent.url.rstrip("/") + path)
                    _shot(night, name)

                assert watcher.problems == []

                page.goto(agent.url.rstrip("/") + "/")
                watcher.active = False  # from here on the browser rightly complains about the missing agent
                agent.stop()
                page.locator("[data-live-badge]").wait_for(state="visible", timeout=15000)
                assert "reconnecting" in page.locator("[data-live-badge]").inner_text()
            finally:
                browser.close()
    finally:
        agent.stop()
