"""This agent's stable client id, kept in its data dir (two data dirs on one host are two clients)."""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

CLIENT_ID_FILE = "client_id"
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def load_or_create_client_id(data_dir: Path) -> str:
    """The id stored in the data dir, created on first use as '<hostname>-<12 hex>'."""
    path = data_dir / CLIENT_ID_FILE
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        if not _VALID.match(existing):
            raise ValueError(f"{path} holds an invalid client id {existing!r}; delete the file to create a new one")
        return existing
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:40].strip("-") or "client"
    client_id = f"{host}-{uuid.uuid4().hex[:12]}"
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(client_id + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return client_id


def read_client_id(data_dir: Path) -> str | None:
    """The id stored in the data dir, or None when there is none (or it is invalid); never creates one."""
    try:
        existing = (data_dir / CLIENT_ID_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return existing if _VALID.match(existing) else None
