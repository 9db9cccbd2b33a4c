"""A real browser (Debian's chromium through Playwright) on an elastic task's page: the group's section renders, and a
machine joining shows up live, without a reload."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from app.db.engine import create_database
from app.db.schema import task_assignments, task_logs, tasks
from tests.training.e2e import sync
from tests.web.test_browser import CHROMIUM, LAUNCH_ARGS, SCREENSHOTS, Watcher, _shot
from tests.web.test_elastic_task import CONTRIBUTIONS, start_farm

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright from PyPI (pip install playwright)")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)

pytestmark = pytest.mark.slow

JOINED = "membership: vm-d joined; 3 of 2..3 members, generation 6"


async def _vm_d_joins(url: str, task_id: int) -> None:
    """What the farm records when vm-d is admitted: its rank, the log line, rank 0's new result."""
    db = create_database(url)
    try:
        async with db.begin() as conn:
            await conn.execute(insert(task_assignments).values(
                task_id=task_id, client_id="vm-d", rank=2, status="training",
                metrics={"step": 830, "samples_per_sec": 55.0, "share": 16, "contributed_samples": 0}))
            await conn.execute(insert(task_logs).values(
                task_id=task_id, client_id="vm-d", log_type="info", message=JOINED,
                created_at=datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)))
            result = {"progress": 42.0, "step": 830, "elastic": {"members": 3, "min": 2, "max": 3,
                                                                 "contributions": {**CONTRIBUTIONS, "vm-d": 16}}}
            await conn.execute(update(tasks).where(tasks.c.id == task_id).values(result=result))
    finally:
        await db.dispose()


def _section(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("""() => {
        const rows = (sel) => Array.from(document.querySelectorAll(sel + ' tr'))
            .map((tr) => Array.from(tr.cells).map((td) => td.textContent.replace(/\\s+/g, ' ').trim()));
        return {
            size: document.querySelector('[data-elastic-size]').textContent.trim(),
            ranks: rows('[data-elastic-ranks]'),
            contributions: rows('[data-elastic-contributions]'),
            changes: rows('[data-elastic-changes]').map((r) => r.slice(1)),
            marker: window.__notReloaded === true,
        };
    }"""))


def test_elastic_section_renders_and_follows_a_join_live(tmp_path: Path) -> None:
    """The section is visible with its size, ranks, contributions and changes; when vm-d joins, the size, the ranks,
    the contributions and the newest change follow within a few live updates, on the same page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    farm = start_farm(tmp_path)
    watcher = Watcher()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = watcher.attach(context.new_page())
                page.goto(farm.agent.signin_url)
                page.goto(f"{farm.agent.url.rstrip('/')}/tasks/{farm.elastic_id}")
                assert page.locator("#elastic-title").is_visible()
                page.evaluate("() => { window.__notReloaded = true; }")
                before = _section(page)
                assert before["size"] == "2" and len(before["ranks"]) == 2 and len(before["contributions"]) == 3
                assert [row[0] for row in before["changes"]] == ["training again", "left", "joined"]
                _shot(page, "task-elastic")

                sync(_vm_d_joins(farm.url, farm.elastic_id))
                page.wait_for_function("() => document.querySelector('[data-elastic-size]').textContent.trim() === '3'",
                                       timeout=20000)
                after = _section(page)
                assert after["marker"], "the task page was reloaded"
                assert after["ranks"][2] == ["2", "d-host", "16 (20.0 %)", "55"]
                assert after["contributions"][-1] == ["d-host", "16", "0.1 %", ""]
                assert after["changes"][0] == ["joined", "d-host", "—", "3 of 2..3 members, generation 6"]
                assert [row[0] for row in after["changes"][1:]] == ["training again", "left", "joined"]

                narrow = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
                narrow.add_cookies(context.cookies())
                small = watcher.attach(narrow.new_page())
                small.goto(f"{farm.agent.url.rstrip('/')}/tasks/{farm.elastic_id}")
                assert small.locator("#elastic-title").is_visible()
                width = small.evaluate("() => document.documentElement.scrollWidth")
                assert width <= 390, f"the elastic task page scrolls sideways ({width} px)"
                _shot(small, "task-elastic-narrow")
                assert watcher.problems == []
            finally:
                browser.close()
    finally:
        farm.agent.stop()
