"""One agent per data dir, `aifarm status` and `aifarm stop`, with real agent processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.agent.harness import AgentProcess, agent_env


def _aifarm(tmp_path: Path, data_dir: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=timeout, env=agent_env(tmp_path))


def test_second_agent_on_a_data_dir_refuses_and_touches_nothing(tmp_path: Path) -> None:
    """A second `aifarm run` says which pid holds the data dir and exits 3; the first keeps its agent.json."""
    first = AgentProcess(tmp_path, "a")
    try:
        agent_file = first.data_dir / "agent.json"
        before = agent_file.read_bytes()
        done = _aifarm(tmp_path, first.data_dir, "run", "--headless", "--port", "0", "--peer-port", "0", timeout=60)
        assert done.returncode == 3
        assert done.stderr.strip() == f"aifarm: error: an agent is already running for {first.data_dir} (pid {first.proc.pid})"
        assert agent_file.read_bytes() == before
        status = _aifarm(tmp_path, first.data_dir, "status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == first.proc.pid
    finally:
        assert first.stop() == 0


def test_status_and_stop(tmp_path: Path) -> None:
    """status: not running (exit 3), then running with its dashboard and donation; stop: a clean exit 0."""
    data_dir = tmp_path / "a"
    idle = _aifarm(tmp_path, data_dir, "status")
    assert idle.returncode == 3 and idle.stdout.startswith("not running (data dir")
    assert not data_dir.exists()
    agent = AgentProcess(tmp_path, "a")
    try:
        shown = _aifarm(tmp_path, data_dir, "status")
        assert shown.returncode == 0, shown.stderr
        fields = dict(line.split(":", 1) for line in shown.stdout.splitlines())
        assert fields["state"].strip() == "running" and int(fields["pid"]) == agent.proc.pid
        assert fields["dashboard"].strip() == agent.url and fields["donation"].strip() == "donating"
        assert fields["current task"].strip() == "none" and "aifarm.sqlite3" in fields["database"]
        stopped = _aifarm(tmp_path, data_dir, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"agent (pid {agent.proc.pid}) stopped"
        assert agent.proc.poll() == 0
        assert "agent stopped" in agent.log()
    finally:
        agent.stop()
    again = _aifarm(tmp_path, data_dir, "stop")
    assert again.returncode == 0 and again.stdout.startswith("no agent is running")
    assert _aifarm(tmp_path, data_dir, "status").returncode == 3
