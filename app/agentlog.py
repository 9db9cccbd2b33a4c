"""The agent's own log file in the data dir: rotated by size, read back by `aifarm logs` and the dashboard."""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from collections.abc import Iterator
from pathlib import Path

LOG_NAME = "agent.log"
MAX_BYTES = 5 << 20
BACKUPS = 3
TAIL_BLOCK = 64 << 10
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_path(data_dir: Path) -> Path:
    """Where the agent of a data dir writes its log."""
    return data_dir / "logs" / LOG_NAME


def add_file_handler(data_dir: Path, level: int) -> logging.Handler:
    """Also log to DATA_DIR/logs/agent.log (5 MB, 3 older files kept), so an agent started at login keeps its log."""
    path = log_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)
    return handler


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a file (read from its end, whatever its size); [] when it does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            data = b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(TAIL_BLOCK, size)
                size -= step
                handle.seek(size)
                data = handle.read(step) + data
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:] if lines > 0 else []


def follow(path: Path, poll: float = 0.5) -> Iterator[str]:
    """New lines as they are written, across rotations (the file is reopened when it is replaced)."""
    handle = None
    inode = None
    position = 0
    while True:
        try:
            stat = path.stat()
        except FileNotFoundError:
            time.sleep(poll)
            continue
        if handle is None or stat.st_ino != inode or stat.st_size < position:
            if handle is not None:
                handle.close()
            handle = path.open("r", encoding="utf-8", errors="replace")
            if inode is None:
                handle.seek(0, os.SEEK_END)
            inode, position = stat.st_ino, handle.tell()
        line = handle.readline()
        if line.endswith("\n"):
            position = handle.tell()
            yield line.rstrip("\n")
        else:
            handle.seek(position)  # a line still being written is read again once it is whole
            time.sleep(poll)
