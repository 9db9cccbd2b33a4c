"""The data dir is the owner's only: the agent, its workers and the CLI create nothing others can read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import mlp_task

pytestmark = pytest.mark.slow


def aifarm(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One CLI command for a data dir."""
    return subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(data_dir)],
                          check=False, capture_output=True, text=True, env=agent_env(tmp_path), timeout=120)


def open_to_others(data_dir: Path) -> list[str]:
    """Every entry of the data dir (the dir included) with a group or other permission bit, with its mode."""
    found = []
    for path in [data_dir, *sorted(data_dir.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not stat.S_ISLNK(path.lstat().st_mode) and mode & 0o077:
            found.append(f"{path.relative_to(data_dir.parent)} {mode:04o}")
    return found


def test_fresh_data_dir_after_training_is_owner_only(tmp_path: Path) -> None:
    """An agent on its embedded database trains a task to completion: nothing in its data dir, database, WAL,
    checkpoints, model and worker files included, has a group or other permission bit."""
    agent = AgentProcess(tmp_path, "agent", "--farm-name", f"perm-{uuid.uuid4().hex[:10]}", "--heartbeat-interval", "1s",
                         env={"AIFARM_MDNS": "false"})
    try:
        task_file = tmp_path / "task.json"
        task_file.write_text(json.dumps(mlp_task("owner-only", epochs=2, samples=800, checkpoint="10 steps")))
        done = aifarm(tmp_path, agent.data_dir, "submit", str(task_file))
        assert done.returncode == 0, done.stderr
        task_id = int(done.stdout.strip())
        wait_for(lambda: agent.api(f"/api/v1/tasks/{task_id}")["status"] in ("completed", "failed", "error"), 240,
                 "the task to finish")
        row = agent.api(f"/api/v1/tasks/{task_id}")
        assert row["status"] == "completed", row
        assert open_to_others(agent.data_dir) == []
        entries = {p.name for p in agent.data_dir.rglob("*")}
        assert {"aifarm.sqlite3", "aifarm.sqlite3-wal", "aifarm.sqlite3-shm", "api_token", "client_id",
                "session_key"} <= entries, sorted(entries)
        assert any(p.is_file() for p in (agent.data_dir / "checkpoints").rglob("*")), "no checkpoint was written"
    finally:
        agent.stop()
    assert open_to_others(agent.data_dir) == []


@pytest.mark.parametrize("command", ["run", "config"])
def test_open_data_dir_is_tightened_on_start_with_one_log_line(tmp_path: Path, command: str) -> None:
    """A 0755 data dir holding a 0644 file and a 0755 folder with a 0640 file: starting the agent (or any command)
    makes it all owner-only, keeps the owner's bits, and says so in one line."""
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "notes.txt").write_text("farm notes")
    (data_dir / "models" / "m.pt").write_text("weights")
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "models", 0o755)
    os.chmod(data_dir / "notes.txt", 0o644)
    os.chmod(data_dir / "models" / "m.pt", 0o640)
    if command == "run":
        agent = AgentProcess(tmp_path, "data", "--farm-name", f"perm-{uuid.uuid4().hex[:10]}", env={"AIFARM_MDNS": "false"})
        agent.stop()
        log = agent.log()
    else:
        done = aifarm(tmp_path, data_dir, "config")
        assert done.returncode == 0, done.stderr
        log = done.stderr
    modes = {name: stat.S_IMODE((data_dir / name).stat().st_mode) for name in ("", "models", "notes.txt", "models/m.pt")}
    assert modes == {"": 0o700, "models": 0o700, "notes.txt": 0o600, "models/m.pt": 0o600}, modes
    lines = [line for line in log.splitlines() if "open to other users" in line]
    assert len(lines) == 1, log
    assert str(data_dir) in lines[0] and "4 entries" in lines[0] and "notes.txt" in lines[0], lines[0]
    assert open_to_others(data_dir) == []
    again = aifarm(tmp_path, data_dir, "config")
    assert again.returncode == 0 and "open to other users" not in again.stderr  # nothing left to tighten
