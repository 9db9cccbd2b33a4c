"""A quick soundness check of an embedded SQLite file before it is used, and the recovery advice when it fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.errors import DatabaseDamaged

MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
# PRAGMA quick_check reads every page: run it only where that stays well under a second.
QUICK_CHECK_MAX_BYTES = 64 << 20


def recovery_advice(path: Path) -> str:
    """How to get a working embedded database back."""
    return (f"move it aside (mv {path} {path}.damaged) and restore a backup with `aifarm db restore BACKUP_FILE`, "
            "or start afresh with an empty database by just running `aifarm run` again")


def check_sqlite_file(path: Path) -> None:
    """Raise DatabaseDamaged naming the file and the recovery unless it looks sound (an empty file is a new database)."""
    problem = _header_problem(path)
    if problem is None and path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
        problem = _quick_check(path)
    if problem is not None:
        raise DatabaseDamaged(f"the SQLite database {path} is damaged ({problem}); {recovery_advice(path)}")


def _header_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(HEADER_SIZE)
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if size == 0:
        return None
    if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
        return "it is not an SQLite database file"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return "its header is invalid"
    pages = int.from_bytes(header[28:32], "big")
    header_count_valid = header[24:28] == header[92:96]
    if _has_wal(path):
        # Pages may still live in the write-ahead log (a checkpoint under way): quick_check judges.
        return None
    if size % page_size or (header_count_valid and pages * page_size > size):
        expected = pages * page_size if header_count_valid else (size // page_size + 1) * page_size
        return f"it is truncated: {size} bytes of {expected}"
    return None


def _has_wal(path: Path) -> bool:
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _quick_check(path: Path) -> str | None:
    try:
        conn = sqlite3.connect(path, timeout=30)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()
    verdict = str(rows[0][0]) if rows else "no answer"
    if verdict == "ok":
        return None
    lines = [line for line in verdict.splitlines() if line.strip() and not line.startswith("***")]
    return f"quick_check: {lines[0] if lines else verdict.strip()}"
