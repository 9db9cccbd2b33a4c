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

from tests.agent.harness import agent_env, wait_for
from tests.tray.screen import virtual_screen

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TRAY_BOX = (440, 0, 640, 48)  # where trayer docks: top right, 200x48
pytestmark = pytest.mark.slow


@pytest.fixture
def x_display() -> Iterator[str]:
    """A virtual screen with a system tray (Xvfb + trayer); skipped with the reason when they are missing."""
    if not shutil.which("Xvfb") or not shutil.which("trayer"):
        pytest.skip("Xvfb and trayer are needed (apt-get install -y xvfb trayer)")
    with virtual_screen("640x200") as display:
        tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "200",
                                 "--height", "48", "--SetDockType", "true", "--transparent", "false"],
                                env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        try:
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
    from app.tray import COLORS

    env = agent_env(tmp_path, {"DISPLAY": x_display, "PYSTRAY_BACKEND": "xorg"})
    data = str(tmp_path / "d")
    agent = subprocess.Popen([sys.executable, "-m", "app", "run", "--data-dir", data, "--port", "0", "--peer-port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert agent.stdout is not None
        assert "running" in agent.stdout.readline()
        wait_for(lambda: COLORS["idle"] in _tray_colors(x_display, "idle"), 20, "the idle icon in the tray")
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
