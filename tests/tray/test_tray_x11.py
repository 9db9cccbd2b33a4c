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

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TRAY_BOX = (440, 0, 640, 48)  # where trayer docks: top right, 200x48
pytestmark = pytest.mark.slow


@pytest.fixture
def x_display() -> Iterator[str]:
    """A virtual screen with a system tray (Xvfb + trayer); skipped with the reason when they are missing."""
    if not shutil.which("Xvfb") or not shutil.which("trayer"):
        pytest.skip("Xvfb and trayer are needed (apt-get install -y xvfb trayer)")
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "640x200x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    number = os.read(read, 16).decode().strip()
    os.close(read)
    display = f":{number}"
    tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "200",
                             "--height", "48", "--SetDockType", "true", "--transparent", "false"],
                            env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    try:
        yield display
    finally:
        tray.terminate()
        xvfb.terminate()
        tray.wait(10)
        xvfb.wait(10)


def _tray_colors(display: str, name: str) -> set[tuple[int, int, int]]:
    from PIL import ImageGrab

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ImageGrab.grab(xdisplay=display)
    shot.save(ARTIFACTS / f"tray-{name}.png")
    return {pixel[:3] for pixel in shot.crop(TRAY_BOX).getdata()}


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
