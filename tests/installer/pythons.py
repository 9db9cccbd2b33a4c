"""Stand-in interpreters on a PATH: some too old (they answer the version check with 'no'), one real."""

from __future__ import annotations

import sys
from pathlib import Path

NAMES = ("python3", "python3.13", "python3.12", "python3.11")


def real_python() -> str:
    """A Python 3.11+ outside any virtual environment (the one this test run's venv was made from)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return base if Path(base).exists() else sys.executable


def make_pythons(directory: Path, *, real: set[str], old: set[str]) -> Path:
    """Write wrappers named after `real` (running a real interpreter) and `old` (failing every command)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in real | old:
        body = f'exec "{real_python()}" "$@"' if name in real else "exit 1"
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return directory
