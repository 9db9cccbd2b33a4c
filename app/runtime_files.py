"""The data dir's private files: its owner-only permissions, the API token, the session key and agent.json."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import psutil

API_TOKEN_FILE = "api_token"
SESSION_KEY_FILE = "session_key"
AGENT_FILE = "agent.json"
PRIVATE_UMASK = 0o077
_NAMES_LOGGED = 5

log = logging.getLogger(__name__)


def secure_data_dir(data_dir: Path) -> list[Path]:
    """Make everything this process creates owner-only (umask 077), and tighten an existing data dir that is
    open to others: the dir to 0700, group and other bits off whatever lies in it. Returns what was tightened."""
    os.umask(PRIVATE_UMASK)
    if not data_dir.is_dir():
        return []
    tightened: list[Path] = []
    failed: list[str] = []
    _tighten(data_dir, 0o700, tightened, failed)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            _tighten(Path(root) / name, None, tightened, failed)
    if tightened:
        names = ", ".join(str(p.relative_to(data_dir)) if p != data_dir else "the dir itself"
                          for p in tightened[:_NAMES_LOGGED])
        more = f" and {len(tightened) - _NAMES_LOGGED} more" if len(tightened) > _NAMES_LOGGED else ""
        log.warning("data dir %s was open to other users: removed group/other permissions of %d entries (%s%s)",
                    data_dir, len(tightened), names, more)
    if failed:
        log.warning("could not make %d entries of data dir %s owner-only (%s)", len(failed), data_dir,
                    "; ".join(failed[:_NAMES_LOGGED]))
    return tightened


def _tighten(path: Path, mode: int | None, tightened: list[Path], failed: list[str]) -> None:
    """Drop group/other bits of one entry (or set `mode`); symbolic links are left alone."""
    try:
        current = path.lstat()
        if stat.S_ISLNK(current.st_mode):
            return
        wanted = mode if mode is not None else stat.S_IMODE(current.st_mode) & 0o700
        if stat.S_IMODE(current.st_mode) != wanted and stat.S_IMODE(current.st_mode) & 0o077:
            os.chmod(path, wanted)
            tightened.append(path)
    except OSError as exc:
        failed.append(f"{path}: {exc.strerror or exc}")


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


def load_or_create_session_key(data_dir: Path) -> str:
    """The key that signs dashboard sessions, created on first run (file mode 0600)."""
    try:
        key = (data_dir / SESSION_KEY_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    return key if len(key) >= 32 else rotate_session_key(data_dir)


def rotate_session_key(data_dir: Path) -> str:
    """Replace the session key (every session cookie signed with the old one stops working); returns the new one."""
    key = secrets.token_urlsafe(32)
    write_private(data_dir / SESSION_KEY_FILE, key + "\n")
    return key


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
    return dict(info)
