"""A virtual X screen (Xvfb) for the real tray tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def screen_answers(display: str) -> bool:
    """True when a fresh process can take a screenshot of the display."""
    done = subprocess.run([sys.executable, "-c", "import sys; from PIL import ImageGrab; ImageGrab.grab(xdisplay=sys.argv[1])",
                           display], capture_output=True, timeout=30)
    return done.returncode == 0


def _start_screen(size: str) -> tuple[subprocess.Popen[bytes], str]:
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{size}x24", "-nolisten", "tcp", "-noreset"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    number = b""
    while not number.endswith(b"\n"):  # the whole line: Xvfb exits when its write of the newline fails
        chunk = os.read(read, 16)
        if not chunk:
            break
        number += chunk
    os.close(read)
    number = number.strip()
    return xvfb, f":{number.decode()}"


@contextmanager
def virtual_screen(size: str = "640x200") -> Iterator[str]:
    """Xvfb on a free display number; yields the DISPLAY value. Skips the test when Xvfb is missing or never answers."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is needed (apt-get install -y xvfb)")
    for _attempt in range(2):
        xvfb, display = _start_screen(size)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not screen_answers(display):
            time.sleep(0.5)
        if screen_answers(display):
            break
        xvfb.terminate()
        xvfb.wait(10)
    else:
        pytest.skip("Xvfb started but its screen never accepted a connection in this sandbox (twice)")
    try:
        yield display
    finally:
        xvfb.terminate()
        xvfb.wait(10)
