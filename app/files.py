"""File helpers shared by the agent and workers: sha256, atomic writes, safe names."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

CHUNK = 1 << 20
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(directory: Path) -> None:
    """Make a rename in this directory durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_atomically(tmp: Path, final: Path) -> None:
    """fsync a finished temporary file and rename it into place, so readers see all of it or nothing."""
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def safe_relative(root: Path, relative: str) -> Path | None:
    """root/relative when every part is a safe name and it stays inside root; else None (path traversal)."""
    parts = relative.split("/")
    if not parts or any(not SAFE_NAME.match(part) for part in parts):
        return None
    candidate = (root / Path(*parts)).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate


def inside(path: Path, folder: Path) -> bool:
    """Whether path, with every symlink followed, lies inside folder (itself resolved)."""
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True
