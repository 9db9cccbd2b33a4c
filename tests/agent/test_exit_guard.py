"""Once the agent has stopped, a thread left behind cannot keep the process alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LINGERING = textwrap.dedent("""
    import logging, sys, threading
    from app.exitguard import exit_within
    logging.basicConfig(stream=sys.stderr)
    threading.Thread(target=threading.Event().wait, name="left-behind", daemon=False).start()
    exit_within({grace}, {code})
    print("returned", flush=True)
""")


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_a_thread_left_behind_is_named_and_the_process_ends_with_the_agents_code() -> None:
    done = _run(LINGERING.format(grace=0.5, code=3))
    assert done.returncode == 3, done.stderr
    assert "returned" in done.stdout
    assert "did not exit within" in done.stderr
    assert "thread 'left-behind'" in done.stderr and "wait" in done.stderr


def test_a_process_that_exits_by_itself_is_not_touched() -> None:
    script = "from app.exitguard import exit_within\nexit_within(30, 3)\nprint('bye')\n"
    done = _run(script)
    assert done.returncode == 0 and done.stdout.strip() == "bye" and done.stderr == ""
