"""Files in the data dir that connect the CLI to a running agent: the API token and agent.json."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import psutil

API_TOKEN_FILE = "api_token"
AGENT_FILE = "agent.json"


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_api_token(data_dir: Path) -> str:
    """The dashboard API token of this data dir, created on first run (file mode 0600)."""
    path = data_dir / API_TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if len(token) >= 32:
        return token
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def write_agent_file(data_dir: Path, info: dict[str, Any]) -> None:
    """Record the running agent's pid and ports for the CLI."""
    write_private(data_dir / AGENT_FILE, json.dumps(info, indent=2))


def remove_agent_file(data_dir: Path) -> None:
    """Forget the running agent (clean stop)."""
    try:
        (data_dir / AGENT_FILE).unlink()
    except FileNotFoundError:
        pass


def read_running_agent(data_dir: Path) -> dict[str, Any] | None:
    """The running agent's agent.json, or None when none runs for this data dir."""
    try:
        info = json.loads((data_dir / AGENT_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:  # kill(0 or -1, 0) would probe many processes
        return None
    if not psutil.pid_exists(pid):  # not os.kill(pid, 0): on Windows that sends CTRL_C_EVENT
        return None
    return info
