"""A real tray icon: `aifarm run` with a display shows its icon in a tray host, and the icon changes on pause."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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


@pytest.fixture
def x_display() -> Iterator[str]:
    """A virtual screen with a system tray (Xvfb + trayer); skipped with the reason when they are missing."""
    if not shutil.which("Xvfb") or not shutil.which("trayer"):
        pytest.skip("Xvfb and trayer are needed (apt-get install -y xvfb trayer)")
    with virtual_screen("640x200") as display:
        tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "200",
                                 "--height", "48", "--SetDockType", "true", "--transparent", "false"],
                                env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # pystray docks once, when the icon shows: the tray must own its selection by then
            wait_for(lambda: _tray_ready(display), 20, "trayer owning the system tray selection")
            time.sleep(1.5)  # and settled: a dock request it drops while starting is not sent again
            yield display
        finally:
            tray.terminate()
            tray.wait(10)


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
        return {pixel[:3] for pixel in shot.convert("RGB").crop(TRAY_BOX).getdata()}


def test_tray_icon_appears_and_changes_when_paused(tmp_path: Path, x_display: str) -> None:
    """The idle icon (green) shows in the tray; after `aifarm pause` it turns to the paused one (amber)."""
    # As in the click test: the agent is started once more when trayer never embeds pystray's icon.
    for attempt in (1, 2):
        if _pause_changes_the_docked_icon(tmp_path, x_display, last=attempt == 2):
            return


def _pause_changes_the_docked_icon(tmp_path: Path, x_display: str, *, last: bool) -> bool:
    """Run the agent, see its idle icon, pause, see the paused icon; False when the icon never docked."""
    from app.tray import COLORS

    env = agent_env(tmp_path, {"DISPLAY": x_display, "PYSTRAY_BACKEND": "xorg"})
    data = str(tmp_path / "d")
    agent = subprocess.Popen([sys.executable, "-m", "app", "run", "--data-dir", data, "--port", "0", "--peer-port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert agent.stdout is not None
        assert "running" in agent.stdout.readline()
        try:
            wait_for(lambda: COLORS["idle"] in _tray_colors(x_display, "idle"), 20, "the idle icon in the tray")
        except AssertionError:
            if last:
                raise
            return False
        done = subprocess.run([sys.executable, "-m", "app", "pause", "--data-dir", data], capture_output=True, text=True,
                              env=env, timeout=30)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: COLORS["paused"] in _tray_colors(x_display, "paused"), 20, "the paused icon in the tray")
        assert COLORS["idle"] not in _tray_colors(x_display, "paused")
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            raise
    assert agent.returncode == 0, agent.stderr.read() if agent.stderr else ""
    return True


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
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{opened}"\n')
    browser.chmod(0o755)
    env = agent_env(tmp_path, {"DISPLAY": x_display, "PYSTRAY_BACKEND": "xorg", "BROWSER": f"{browser} %s"})
    # pystray's X11 icon now and then is never embedded by trayer (a known docking race of that pair): the agent
    # is started a second time then, and the click must work on the icon that docks.
    for attempt in (1, 2):
        if _click_the_docked_icon(tmp_path, env, opened, last=attempt == 2):
            return


def _click_the_docked_icon(tmp_path: Path, env: dict[str, str], opened: Path, *, last: bool) -> bool:
    """Run the agent, click its icon and check the signed-in dashboard opened; False when the icon never docked."""
    from app.tray import COLORS

    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        agent = subprocess.Popen([sys.executable, "-m", "app", "run", "--data-dir", str(tmp_path / "d"), "--port", "0",
                                  "--peer-port", "0"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    display = env["DISPLAY"]
    try:
        assert agent.stdout is not None
        started = URL_LINE.search(agent.stdout.readline())
        assert started, log_path.read_text()
        try:
            where = wait_for(lambda: next(filter(None, (_color_position(display, c) for c in COLORS.values())), None),
                             20, "the icon in the tray")
        except AssertionError:
            if last:
                raise
            return False
        _left_click(display, *where)
        wait_for(opened.exists, 20, "the browser opened by a click on the icon")
        urls = opened.read_text().split()
        assert len(urls) == 1 and urls[0].startswith(started.group(2) + "login?token="), urls
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            raise AssertionError(f"the agent did not stop on SIGINT:\n{log_path.read_text()}") from None
    assert agent.returncode == 0, log_path.read_text()
    return True
