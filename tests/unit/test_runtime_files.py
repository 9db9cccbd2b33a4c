"""The API token and agent.json that connect the CLI to a running agent."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from app.runtime_files import (
    AGENT_FILE,
    API_TOKEN_FILE,
    load_or_create_api_token,
    read_running_agent,
    remove_agent_file,
    write_agent_file,
    write_private,
)


def test_api_token_is_created_once_private_and_stable(tmp_path: Path) -> None:
    """The first call creates a long token in a 0600 file; later calls return the same token."""
    data_dir = tmp_path / "new-dir"
    token = load_or_create_api_token(data_dir)
    path = data_dir / API_TOKEN_FILE
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8").strip() == token
    assert load_or_create_api_token(data_dir) == token
    assert load_or_create_api_token(data_dir) == token


def test_api_tokens_differ_between_data_dirs(tmp_path: Path) -> None:
    """Two data dirs get two different tokens."""
    assert load_or_create_api_token(tmp_path / "a") != load_or_create_api_token(tmp_path / "b")


def test_short_api_token_is_replaced(tmp_path: Path) -> None:
    """A truncated token file (too short to be safe) is replaced by a new token."""
    (tmp_path / API_TOKEN_FILE).write_text("short\n", encoding="utf-8")
    token = load_or_create_api_token(tmp_path)
    assert token != "short" and len(token) >= 32


def test_write_private_replaces_a_world_readable_file(tmp_path: Path) -> None:
    """Rewriting an existing 0644 file leaves it 0600."""
    path = tmp_path / "secret.txt"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text(encoding="utf-8") == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_agent_file_is_none(tmp_path: Path) -> None:
    """No agent.json: no running agent."""
    assert read_running_agent(tmp_path) is None


@pytest.mark.parametrize("text", ["", "{not json", "\x00\xff garbage", "null", "[1, 2]", "42", '"pid"', '{"port": 1}'])
def test_garbage_agent_file_is_none(tmp_path: Path, text: str) -> None:
    """An agent.json that is not a JSON object with a pid means no running agent."""
    (tmp_path / AGENT_FILE).write_text(text, encoding="utf-8")
    assert read_running_agent(tmp_path) is None


@pytest.mark.parametrize("pid", ["1234", 12.5, None, True, 0, -1])
def test_agent_file_with_bad_pid_is_none(tmp_path: Path, pid: object) -> None:
    """A pid that is not a positive integer means no running agent."""
    (tmp_path / AGENT_FILE).write_text(json.dumps({"pid": pid, "port": 8470}), encoding="utf-8")
    assert read_running_agent(tmp_path) is None


def test_dead_pid_is_none(tmp_path: Path) -> None:
    """agent.json of a process that has exited: no running agent."""
    done = subprocess.Popen(["true"])
    done.wait()
    write_agent_file(tmp_path, {"pid": done.pid, "dashboard_port": 8470})
    assert read_running_agent(tmp_path) is None


def test_live_pid_returns_the_info(tmp_path: Path) -> None:
    """agent.json of a live process is returned as written, from a private file."""
    info = {"pid": os.getpid(), "dashboard_port": 8470, "peer_port": 8471}
    write_agent_file(tmp_path, info)
    assert stat.S_IMODE((tmp_path / AGENT_FILE).stat().st_mode) == 0o600
    assert read_running_agent(tmp_path) == info


def test_remove_agent_file(tmp_path: Path) -> None:
    """A clean stop removes agent.json; removing it twice is fine."""
    write_agent_file(tmp_path, {"pid": os.getpid()})
    remove_agent_file(tmp_path)
    remove_agent_file(tmp_path)
    assert read_running_agent(tmp_path) is None
