"""The tray: the menu as a pure function of the agent's state, its icons, and actions reaching the agent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app.tray import AgentActions, build_menu, draw_icon, icon_state, seconds_until_tomorrow, status_lines

BASE: dict[str, Any] = {"farm_name": "lab", "peer_count": 2, "database_ok": True,
                        "donation": {"paused": False, "finish_current": False, "summary": "donating", "on_hold": []},
                        "work": {"running": None, "joined": None, "last_outcome": None}}


def state(**changes: Any) -> dict[str, Any]:
    """BASE with nested changes."""
    out = {**BASE, "donation": dict(BASE["donation"]), "work": dict(BASE["work"])}
    for key, value in changes.items():
        if key in ("donation", "work"):
            out[key].update(value)
        else:
            out[key] = value
    return out


RUNNING = {"task_id": 7, "name": "mnist", "progress": 42.0}
CASES = {
    "idle": state(),
    "training": state(work={"running": RUNNING}),
    "paused": state(donation={"paused": True, "summary": "paused until 2026-11-27T08:00:00+00:00"}),
    "error": state(work={"last_outcome": {"task_id": 3, "outcome": "error", "reason": "bad"}}),
    "no_database": state(database_ok=False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_icon_state_for_every_state(name: str) -> None:
    """Each agent state maps to its own icon."""
    assert icon_state(CASES[name]) == name


def test_menu_idle() -> None:
    """Idle: status lines, then open, pause, snoozes, finish (disabled: nothing to finish), settings, quit."""
    menu = build_menu(CASES["idle"])
    actions = [e.action for e in menu if e.action]
    assert actions == ["open_dashboard", "pause", "snooze_hour", "snooze_tomorrow", "finish_then_pause", "settings", "quit"]
    assert not next(e for e in menu if e.action == "finish_then_pause").enabled
    assert menu[0].text == "Farm lab · 2 peer(s)" and not menu[0].enabled
    assert "No task right now" in [e.text for e in menu]


def test_menu_training_shows_task_and_allows_finishing() -> None:
    """Training: the task and its progress in the status, 'finish then pause' enabled."""
    menu = build_menu(CASES["training"])
    assert "Training mnist (task 7): 42%" in [e.text for e in menu]
    assert next(e for e in menu if e.action == "finish_then_pause").enabled


def test_menu_paused_offers_resume_only() -> None:
    """Paused: Resume instead of Pause and the snoozes."""
    actions = [e.action for e in build_menu(CASES["paused"]) if e.action]
    assert actions == ["open_dashboard", "resume", "settings", "quit"]


def test_menu_no_database_and_on_hold_lines() -> None:
    """The status says when the database is away and why donation is on hold."""
    lines = status_lines(state(database_ok=False, donation={"on_hold": ["running on battery"]}))
    assert "Database unreachable: retrying" in lines and "On hold: running on battery" in lines


def test_icons_differ_by_state() -> None:
    """Five distinct images, so the state shows at a glance."""
    images = {name: draw_icon(name).tobytes() for name in CASES}
    assert len(set(images.values())) == len(images)


def test_snooze_until_tomorrow() -> None:
    """Until 08:00 the next day."""
    assert seconds_until_tomorrow(datetime(2026, 11, 26, 20, 0)) == 12 * 3600


@pytest.fixture
def agent_loop(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    """A real Agent (not started) on a real SQLite file, owned by an event loop on another thread like the tray's."""
    from app.agent import Agent
    from app.config import load_settings
    from app.db.engine import create_database
    from app.db.migrate import upgrade

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def build() -> Any:
        db = create_database(sqlite_url)
        await upgrade(db)
        settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "d")}, config_file=tmp_path / "none.toml")
        return Agent(settings, db)

    agent = asyncio.run_coroutine_threadsafe(build(), loop).result(30)
    agent.dashboard_port = 8470
    try:
        yield loop, agent
    finally:
        asyncio.run_coroutine_threadsafe(agent.db.dispose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_every_action_reaches_the_agent(agent_loop: tuple[asyncio.AbstractEventLoop, Any]) -> None:
    """Menu actions run on the agent's loop and change its state (or open the signed-in dashboard)."""
    loop, agent = agent_loop
    opened: list[str] = []
    stopped: list[bool] = []
    actions = AgentActions(loop, agent.donation, agent.login_url, lambda: stopped.append(True), open_url=opened.append)
    actions("pause").result(10)
    assert agent.donation.state()["paused"] is True
    actions("resume").result(10)
    assert agent.donation.state()["paused"] is False
    actions("snooze_hour").result(10)
    assert agent.donation.state()["paused"] and agent.donation.paused_until is not None
    actions("resume").result(10)
    actions("snooze_tomorrow").result(10)
    assert agent.donation.state()["until"] is not None
    actions("resume").result(10)
    actions("open_dashboard").result(10)
    actions("settings").result(10)
    assert opened[0].startswith("http://127.0.0.1:8470/login?token=") and opened[1].endswith("&next=/settings")
    actions("quit").result(10)
    assert stopped == [True]
    with pytest.raises(ValueError):
        actions("format_disk")


def test_pystray_icon_menu_items_call_the_agent(agent_loop: tuple[asyncio.AbstractEventLoop, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A real pystray Icon (dummy backend): its menu is ours, and activating Pause pauses the agent."""
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    from app.tray import Tray

    loop, agent = agent_loop
    tray = Tray(AgentActions(loop, agent.donation, agent.login_url, lambda: None, open_url=lambda url: None), agent.describe)
    items = list(tray.icon.menu.items)
    texts = [str(item.text) for item in items]
    assert "Pause" in texts and "Quit" in texts
    pause = next(item for item in items if str(item.text) == "Pause")
    pause(tray.icon)
    deadline = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.2), loop)
    deadline.result(5)
    assert agent.donation.state()["paused"] is True
    tray.refresh()
    assert tray.shown == "paused"
    assert "Resume" in [str(item.text) for item in tray.icon.menu.items]


def test_click_on_an_icon_without_menu_opens_the_dashboard(agent_loop: tuple[asyncio.AbstractEventLoop, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no menu can open (the plain X11 icon), a click runs the default item: Open dashboard, signed in."""
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    from app.tray import Tray

    loop, agent = agent_loop
    opened: list[str] = []
    done = threading.Event()

    def open_url(url: str) -> None:
        opened.append(url)
        done.set()

    tray = Tray(AgentActions(loop, agent.donation, agent.login_url, lambda: None, open_url=open_url), agent.describe)
    defaults = [str(item.text) for item in tray.icon.menu.items if item.default]
    assert defaults == ["Open dashboard"]
    tray.icon.menu(tray.icon)  # what a left click on the X11 icon runs (Icon.__call__, less its menu update)
    assert done.wait(10)
    assert len(opened) == 1 and opened[0].startswith("http://127.0.0.1:8470/login?token=") and "next=" not in opened[0]
