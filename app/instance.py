"""One agent per data dir: a lock held for the agent's whole life, and the pid of whoever holds it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from app.errors import AifarmError

LOCK_NAME = "agent.lock"
PID_NAME = "agent.pid"


class AlreadyRunning(AifarmError):
    """Another agent holds this data dir."""

    exit_code = 3


@contextmanager
def single_instance(data_dir: Path) -> Iterator[None]:
    """Hold the data dir's lock while the block runs; AlreadyRunning, touching nothing, when another agent has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(data_dir / LOCK_NAME), mode=0o600)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AlreadyRunning(f"an agent is already running for {data_dir} (pid {holder_pid(data_dir) or 'unknown'})") from None
    pid_file = data_dir / PID_NAME
    try:
        pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def holder_pid(data_dir: Path) -> int | None:
    """The pid written by the agent that holds the lock, if it wrote one."""
    try:
        text = (data_dir / PID_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None
