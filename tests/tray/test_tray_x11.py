"""A real tray icon: `aifarm run` with a display docks its icon in a tray host (trayer, or one that drops requests
while starting, or one that starts later), the icon changes on pause and a click on it opens the dashboard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.agent.harness import URL_LINE, agent_env, wait_for
from tests.tray.screen import virtual_screen

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TRAY_BOX = (440, 0, 640, 48)  # where trayer docks: top right, 200x48
pytestmark = pytest.mark.slow


def _tray_ready(display: str) -> bool:
    """True when a system tray owns the screen's _NET_SYSTEM_TRAY_S0 selection (asked from a child process)."""
    code = ("import sys; from Xlib import X, display\n"
            "d = display.Display(sys.argv[1])\n"
            "sys.exit(d.get_selection_owner(d.intern_atom('_NET_SYSTEM_TRAY_S0')) == X.NONE)\n")
    return subprocess.run([sys.executable, "-c", code, display], capture_output=True, timeout=30).returncode == 0


def _start_trayer(display: str) -> subprocess.Popen[bytes]:
    """trayer docked at the top right of the screen, owning its system tray selection."""
    tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "200",
                             "--height", "48", "--SetDockType", "true", "--transparent", "false"],
                            env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _tray_ready(display), 20, "trayer owning the system tray selection")
    except BaseException:
        _stop(tray)
        raise
    return tray


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)


@pytest.fixture
def bare_display() -> Iterator[str]:
    """A virtual screen without a system tray; skipped with the reason when Xvfb or trayer is missing."""
    if not shutil.which("Xvfb") or not shutil.which("trayer"):
        pytest.skip("Xvfb and trayer are needed (apt-get install -y xvfb trayer)")
    with virtual_screen("640x200") as display:
        yield display


@pytest.fixture
def x_display(bare_display: str) -> Iterator[str]:
    """A virtual screen with a system tray (Xvfb + trayer)."""
    tray = _start_trayer(bare_display)
    try:
        yield bare_display
    finally:
        _stop(tray)


def _tray_colors(display: str, name: str) -> set[tuple[int, int, int]]:
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"tray-{name}.png"
    # A child process takes the screenshot: X connections made by earlier tests in this process must not matter.
    done = subprocess.run([sys.executable, "-c", "import sys; from PIL import ImageGrab; "
                           "ImageGrab.grab(xdisplay=sys.argv[1]).save(sys.argv[2])", display, str(path)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "screenshot failed")
    with Image.open(path) as shot:
        box = shot.convert("RGB").crop(TRAY_BOX)
        return {color for _count, color in box.getcolors(box.width * box.height)}


@contextmanager
def _agent(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """`aifarm run` with the tray; yields its dashboard's base URL, then stops it with Ctrl-C and checks it ended well."""
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        agent = subprocess.Popen([sys.executable, "-m", "app", "run", "--data-dir", str(tmp_path / "d"), "--port", "0",
                                  "--peer-port", "0"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert agent.stdout is not None
        started = URL_LINE.search(agent.stdout.readline())
        assert started, log_path.read_text()
        yield started.group(2)
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            raise AssertionError(f"the agent did not stop on SIGINT:\n{log_path.read_text()}") from None
    assert agent.returncode == 0, log_path.read_text()


def test_tray_icon_appears_and_changes_when_paused(tmp_path: Path, x_display: str) -> None:
    """The idle icon (green) shows in the tray; after `aifarm pause` it turns to the paused one (amber)."""
    from app.tray import COLORS

    env = agent_env(tmp_path, {"DISPLAY": x_display, "PYSTRAY_BACKEND": "xorg"})
    with _agent(tmp_path, env):
        wait_for(lambda: COLORS["idle"] in _tray_colors(x_display, "idle"), 20, "the idle icon in the tray")
        done = subprocess.run([sys.executable, "-m", "app", "pause", "--data-dir", str(tmp_path / "d")],
                              capture_output=True, text=True, env=env, timeout=30)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: COLORS["paused"] in _tray_colors(x_display, "paused"), 20, "the paused icon in the tray")
        assert COLORS["idle"] not in _tray_colors(x_display, "paused")


def _icon_parent(display: str) -> str | None:
    """Where the agent's icon window is: "root" (not docked), "docked", or None before it exists (child process)."""
    code = ("import sys; from Xlib import display\n"
            "d = display.Display(sys.argv[1]); root = d.screen().root\n"
            "def find(w):\n"
            "    for c in w.query_tree().children:\n"
            "        if (c.get_wm_class() or ('', ''))[1] == 'aifarm': return c\n"
            "        found = find(c)\n"
            "        if found: return found\n"
            "icon = find(root)\n"
            "print('' if icon is None else 'root' if icon.query_tree().parent == root else 'docked')\n")
    done = subprocess.run([sys.executable, "-c", code, display], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() or None


def test_icon_docks_into_a_tray_host_that_starts_later_and_again_after_it_restarts(tmp_path: Path,
                                                                                   bare_display: str) -> None:
    """An icon shown before any tray host docks when trayer starts, and again when trayer is restarted."""
    from app.tray import COLORS

    env = agent_env(tmp_path, {"DISPLAY": bare_display, "PYSTRAY_BACKEND": "xorg"})
    with _agent(tmp_path, env):
        assert wait_for(lambda: _icon_parent(bare_display), 20, "the icon window") == "root"
        for run in ("first", "restarted"):
            tray = _start_trayer(bare_display)
            try:
                wait_for(lambda shot=f"late-{run}": COLORS["idle"] in _tray_colors(bare_display, shot), 20,
                         f"the idle icon in the {run} tray")
            finally:
                _stop(tray)
            wait_for(lambda: _icon_parent(bare_display) == "root", 20, "the icon back on the root window")


def test_icon_asks_again_when_the_tray_host_drops_its_dock_request(tmp_path: Path, bare_display: str) -> None:
    """A tray host that drops what reaches it while starting gets one request, then another a while later."""
    host_log = tmp_path / "host.jsonl"
    host = subprocess.Popen([sys.executable, "-m", "tests.tray.xembed_host", bare_display, str(host_log), "1.0"],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "host.err").open("w"))
    try:
        wait_for(lambda: _tray_ready(bare_display), 20, "the tray host owning the system tray selection")
        env = agent_env(tmp_path, {"DISPLAY": bare_display, "PYSTRAY_BACKEND": "xorg"})
        with _agent(tmp_path, env):
            wait_for(lambda: host_log.exists() and "embedded" in host_log.read_text(), 20, "the icon embedded")
            assert _icon_parent(bare_display) == "docked"
    finally:
        _stop(host)
    requests = [json.loads(line) for line in host_log.read_text().splitlines()]
    assert [r["action"] for r in requests] == ["dropped", "embedded"], requests
    assert requests[1]["t"] - requests[0]["t"] >= 1.0


def _color_position(display: str, color: tuple[int, int, int]) -> tuple[int, int] | None:
    """The centre of the pixels of `color` in the tray box of a fresh screenshot, or None."""
    from PIL import Image

    _tray_colors(display, "click")
    with Image.open(ARTIFACTS / "tray-click.png") as shot:
        box = shot.convert("RGB").crop(TRAY_BOX)
        points = [(x, y) for y in range(box.height) for x in range(box.width) if box.getpixel((x, y)) == color]
    if not points:
        return None
    return (TRAY_BOX[0] + sum(x for x, _ in points) // len(points), TRAY_BOX[1] + sum(y for _, y in points) // len(points))


def _left_click(display: str, x: int, y: int) -> None:
    """A real left click at (x, y) through the XTEST extension, from a child process."""
    code = ("import sys, time; from Xlib import X, display; from Xlib.ext import xtest\n"
            "d = display.Display(sys.argv[1]); x, y = int(sys.argv[2]), int(sys.argv[3])\n"
            "xtest.fake_input(d, X.MotionNotify, x=x, y=y); d.sync(); time.sleep(0.2)\n"
            "xtest.fake_input(d, X.ButtonPress, 1); d.sync(); time.sleep(0.1)\n"
            "xtest.fake_input(d, X.ButtonRelease, 1); d.sync()\n")
    done = subprocess.run([sys.executable, "-c", code, display, str(x), str(y)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_click_on_the_x11_icon_opens_the_signed_in_dashboard(tmp_path: Path, x_display: str) -> None:
    """The plain X11 icon has no menu: a left click on it runs the default item, Open dashboard, in the browser."""
    from app.tray import COLORS

    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{opened}"\n')
    browser.chmod(0o755)
    env = agent_env(tmp_path, {"DISPLAY": x_display, "PYSTRAY_BACKEND": "xorg", "BROWSER": f"{browser} %s"})
    with _agent(tmp_path, env) as started:
        where = wait_for(lambda: next(filter(None, (_color_position(x_display, c) for c in COLORS.values())), None),
                         20, "the icon in the tray")
        _left_click(x_display, *where)
        wait_for(opened.exists, 20, "the browser opened by a click on the icon")
        urls = opened.read_text().split()
        assert len(urls) == 1 and urls[0].startswith(started + "login?token="), urls


STOP_DURING_REFRESH = """
import sys, threading, time
from app.tray import Tray

state = {"farm_name": "lab", "peer_count": 0, "database_ok": True, "donation": {"paused": False, "summary": "donating"},
         "work": {"running": None, "joined": None, "last_outcome": None}}
calls = 0
refreshing = threading.Event()

def describe():
    global calls
    calls += 1
    if calls == 2:  # the first refresh (the first call is the tray's own start): the stop comes in the middle of it
        refreshing.set()
        time.sleep(1.0)
        state["peer_count"] = 1
    return state

tray = Tray(lambda action: None, describe)
threading.Thread(target=lambda: (refreshing.wait(), tray.stop()), daemon=True).start()
tray.run()
print("stopped", flush=True)
"""


def test_a_stop_during_a_refresh_ends_the_x11_icon(tmp_path: Path, bare_display: str) -> None:
    """Stopping the icon while a refresh hands it a new title still ends the process (nothing waits for a gone loop)."""
    env = agent_env(tmp_path, {"DISPLAY": bare_display, "PYSTRAY_BACKEND": "xorg"})
    try:
        done = subprocess.run([sys.executable, "-c", STOP_DURING_REFRESH], capture_output=True, text=True, env=env,
                              timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the icon's process never ended: {exc.stderr!r}") from None
    assert done.returncode == 0 and done.stdout == "stopped\n", done.stderr
