"""The CLI asking a running agent that does not answer: one clear line naming the agent, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from app.runtime_files import write_agent_file
from tests.agent.harness import agent_env


def test_an_agent_that_never_answers_is_reported_in_one_line(tmp_path: Path) -> None:
    """agent.json names a live pid and a port that accepts and never replies: `aifarm peers` says so and exits 1."""
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o700)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        write_agent_file(data_dir, {"pid": os.getpid(), "client_id": "x", "dashboard_port": port,
                                    "dashboard_host": "127.0.0.1", "peer_port": 1})
        done = subprocess.run([sys.executable, "-m", "app", "peers", "--data-dir", str(data_dir)],
                              capture_output=True, text=True, env=agent_env(tmp_path), timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did not answer within 10 s" in lines[0] and str(port) in lines[0], done.stderr
