"""The Linux tray menu over D-Bus: `aifarm run` registers an AppIndicator with a StatusNotifier host, every menu
item of the tray's menu is there, clicking Pause, Resume and Quit through com.canonical.dbusmenu acts on the agent,
and Ctrl-C still stops it cleanly.

The agent uses the distribution's PyGObject the way the installer sets it up (installer/system_gi.py).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.tray import build_menu
from tests.agent.harness import URL_LINE, agent_env, wait_for
from tests.tray.screen import virtual_screen

ROOT = Path(__file__).resolve().parents[2]
HOST = Path(__file__).with_name("sni_host.py")
pytestmark = pytest.mark.slow


@pytest.fixture
def gi_dir(tmp_path: Path) -> Path:
    """A directory with the distribution's `gi`, linked by the installer's own script; skips where it cannot be."""
    into = tmp_path / "system-gi"
    done = subprocess.run([sys.executable, str(ROOT / "installer" / "system_gi.py"), "--into", str(into)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1, 3), done.stderr
    if done.returncode != 0:
        pytest.skip(f"no PyGObject with AppIndicator for this Python: {done.stdout.strip() or done.stderr.strip()} "
                    "(apt-get install -y python3-gi gir1.2-ayatanaappindicator3-0.1)")
    return into


@pytest.fixture
def session_bus() -> Iterator[str]:
    """A private D-Bus session bus; yields its address."""
    if not shutil.which("dbus-daemon"):
        pytest.skip("dbus-daemon is needed (apt-get install -y dbus)")
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert daemon.stdout is not None
    address = daemon.stdout.readline().strip()
    try:
        assert address.startswith("unix:"), address
        yield address
    finally:
        daemon.terminate()
        daemon.wait(10)


@dataclass
class Host:
    """The StatusNotifier host process (tests/tray/sni_host.py) and its JSON lines."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]]

    def next(self, timeout: float = 30) -> dict[str, Any]:
        """The next line it printed."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the StatusNotifier host said nothing for {timeout} s") from None

    def ask(self, **command: Any) -> Any:
        """Send one command; returns its answer (fails on an error answer)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        reply = self.next()
        while "event" in reply:  # the item registers again when its menu or icon is replaced
            reply = self.next()
        assert "ok" in reply, reply
        return reply["ok"]


@pytest.fixture
def host(session_bus: str, gi_dir: Path) -> Iterator[Host]:
    """A StatusNotifier watcher and host on the session bus."""
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": session_bus, "PYTHONPATH": str(gi_dir)}
    proc = subprocess.Popen([sys.executable, str(HOST)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    running = Host(proc, lines)
    try:
        assert running.next() == {"event": "ready"}
        yield running
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class TrayAgent:
    """`aifarm run` with a display and the session bus: its process, dashboard URL, data dir and log."""

    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    log_path: Path

    def status(self) -> dict[str, Any]:
        """Its /api/v1/status (describe())."""
        token = (self.data_dir / "api_token").read_text().strip()
        request = urllib.request.Request(self.url.rstrip("/") + "/api/v1/status",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def log(self) -> str:
        """What it wrote to stderr."""
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def tray_agent(tmp_path: Path, session_bus: str, gi_dir: Path, host: Host) -> Iterator[TrayAgent]:
    """The agent with its tray on a virtual screen, registered with the host; stopped with SIGINT if still running."""
    with virtual_screen("320x200") as display:
        env = agent_env(tmp_path, {"DISPLAY": display, "DBUS_SESSION_BUS_ADDRESS": session_bus,
                                   "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(gi_dir)]))})
        env.pop("PYSTRAY_BACKEND", None)  # pystray's own choice, as for a volunteer: AppIndicator when gi imports
        log_path = tmp_path / "agent.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "app", "run", "--data-dir", str(tmp_path / "d"), "--port", "0",
                                     "--peer-port", "0"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        try:
            assert proc.stdout is not None
            started = URL_LINE.search(proc.stdout.readline())
            assert started, log_path.read_text()
            registered = host.next(60)
            assert registered["event"] == "registered", registered
            assert registered["path"].startswith("/org/ayatana/NotificationItem/"), registered
            yield TrayAgent(proc, started.group(2), tmp_path / "d", log_path)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def expected_layout(state: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The menu build_menu() defines for a state, as a dbusmenu host sees it: label, enabled, type."""
    return [("", True, "separator") if entry.separator else (entry.text, entry.enabled, "standard")
            for entry in build_menu(state)]


def seen_layout(host: Host) -> list[tuple[str, bool, str]]:
    """The menu the host reads through com.canonical.dbusmenu.GetLayout."""
    return [(item["label"], item["enabled"], item["type"]) for item in host.ask(cmd="layout") if item["visible"]]


def item_id(host: Host, label: str) -> int:
    """The dbusmenu id of the item with this label."""
    return next(item["id"] for item in host.ask(cmd="layout") if item["label"] == label)


def test_appindicator_menu_over_dbus_pauses_resumes_and_quits(host: Host, tray_agent: TrayAgent) -> None:
    """The item's menu is build_menu()'s; Pause, Resume and Quit clicked over D-Bus act on the agent."""
    item = host.ask(cmd="item")
    assert item["Status"] == "Active" and item["Menu"], item

    def menu_matches(paused: bool) -> bool:
        state = tray_agent.status()
        return state["donation"]["paused"] is paused and seen_layout(host) == expected_layout(state)

    wait_for(lambda: menu_matches(False), 30, "the menu of build_menu() for the idle agent")
    labels = [label for label, _, _ in seen_layout(host)]
    for text in ("Open dashboard", "Pause", "Snooze for 1 hour", "Snooze until tomorrow",
                 "Finish current task, then pause", "Settings", "Quit"):
        assert text in labels

    host.ask(cmd="click", id=item_id(host, "Pause"))
    wait_for(lambda: tray_agent.status()["donation"]["paused"], 20, "the agent paused by the menu")
    wait_for(lambda: menu_matches(True), 30, "the paused menu (Resume instead of Pause)")
    assert "Pause" not in [label for label, _, _ in seen_layout(host)]

    host.ask(cmd="click", id=item_id(host, "Resume"))
    wait_for(lambda: tray_agent.status()["donation"]["paused"] is False, 20, "the agent resumed by the menu")

    host.ask(cmd="click", id=item_id(host, "Quit"))
    assert tray_agent.proc.wait(60) == 0, tray_agent.log()
    assert "agent stopped" in tray_agent.log()


def test_ctrl_c_stops_the_agent_cleanly_with_the_appindicator_tray(tray_agent: TrayAgent) -> None:
    """SIGINT (Ctrl-C) still reaches the agent's clean stop once the GTK main loop of the tray runs."""
    wait_for(lambda: tray_agent.status()["donation"]["paused"] is False, 20, "the agent answering")
    tray_agent.proc.send_signal(signal.SIGINT)
    assert tray_agent.proc.wait(60) == 0, tray_agent.log()
    assert "agent stopped" in tray_agent.log()
