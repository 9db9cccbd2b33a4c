"""Relative times read the same from the server (app/timefmt.py) and in the browser (static/js/time.js)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from app.timefmt import duration, relative_time

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright from PyPI (pip install playwright)")

TIME_JS = Path(__file__).resolve().parents[2] / "static" / "js" / "time.js"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
NOW = datetime(2026, 3, 29, 12, 0, 0, tzinfo=timezone.utc)  # the day Europe/Berlin changes to summer time
BERLIN = timezone(timedelta(hours=2))

# Seconds before NOW (negative: after it) and the text both sides must show.
OFFSETS = [
    (0, "just now"), (0.4, "just now"), (0.999, "just now"), (-0.5, "just now"),
    (1, "1 s ago"), (1.6, "1 s ago"), (42, "42 s ago"), (59, "59 s ago"), (59.999, "59 s ago"),
    (60, "1 min ago"), (119, "1 min ago"), (3599, "59 min ago"),
    (3600, "1 h ago"), (3660, "1 h 1 min ago"), (7199, "1 h 59 min ago"), (86399, "23 h 59 min ago"),
    (86400, "1 d ago"), (90000, "1 d 1 h ago"), (30 * 86400 + 5 * 3600 + 59, "30 d 5 h ago"),
    (-1, "in 1 s"), (-59.5, "in 59 s"), (-3600, "in 1 h"), (-90061, "in 1 d 1 h"),
]
DURATIONS = [0, 5, 5.5, 42.3, 59, 60, 61, 3599, 3600, 3661, 7200, 86399, 86400, 90000, 200000]


def _spellings(moment: datetime) -> list[str]:
    """One instant as the dashboard may hand it over: Z, +00:00, another offset, and naive (the database's UTC)."""
    utc = moment.astimezone(timezone.utc)
    return [utc.isoformat().replace("+00:00", "Z"), utc.isoformat(), utc.astimezone(BERLIN).isoformat(),
            utc.replace(tzinfo=None).isoformat()]


def test_relative_time_reads_the_same_in_python_and_in_the_browser() -> None:
    """Over a table of offsets, spelled four ways, the browser's text equals the server's and the expected one."""
    cases = [(text, expected) for seconds, expected in OFFSETS
             for text in _spellings(NOW - timedelta(seconds=seconds))]
    cases += [("", "—"), ("not a time", "—"), ("2026-13-45T99:00:00Z", "—")]
    for text, expected in cases:
        assert relative_time(text, now=NOW) == expected, text
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            # A local zone away from UTC: a naive time must still be read as UTC, as the server reads it.
            page = browser.new_context(timezone_id="Europe/Berlin").new_page()
            page.add_script_tag(path=str(TIME_JS))
            in_browser = page.evaluate(
                "([texts, now, seconds]) => [texts.map((t) => window.AifarmTime.relative(t, now)),"
                " seconds.map((s) => window.AifarmTime.duration(s))]",
                [[text for text, _ in cases], NOW.timestamp() * 1000, DURATIONS])
        finally:
            browser.close()
    assert dict(zip((text for text, _ in cases), in_browser[0], strict=False)) == {text: expected for text, expected in cases}
    assert in_browser[1] == [duration(seconds) for seconds in DURATIONS]
