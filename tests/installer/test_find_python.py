"""installer/find-python.sh: the first Python 3.11 or newer among python3, python3.13, 3.12, 3.11; PYTHON overrides."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.installer.pythons import make_pythons

ROOT = Path(__file__).resolve().parents[2]


def find_python(path: Path, python: str | None = None) -> subprocess.CompletedProcess[str]:
    """find_python as the installers call it, with only `path` on PATH."""
    env = {"PATH": str(path)} | ({"PYTHON": python} if python is not None else {})
    script = f'. "{ROOT / "installer" / "find-python.sh"}"; find_python'
    return subprocess.run(["/bin/bash", "-c", script], check=False, capture_output=True, text=True, env=env, timeout=60)


def test_python3_first_when_new_enough(tmp_path: Path) -> None:
    """python3 wins when it is 3.11 or newer, even with newer versioned names next to it."""
    path = make_pythons(tmp_path / "bin", real={"python3", "python3.13"}, old=set())
    assert find_python(path).stdout == "python3\n"


def test_first_new_enough_versioned_name_when_python3_is_old(tmp_path: Path) -> None:
    """An old python3 is passed over for the newest versioned name that runs (3.13 missing here)."""
    path = make_pythons(tmp_path / "bin", real={"python3.12", "python3.11"}, old={"python3"})
    assert find_python(path).stdout == "python3.12\n"
    path = make_pythons(tmp_path / "bin2", real={"python3.11"}, old={"python3", "python3.13", "python3.12"})
    assert find_python(path).stdout == "python3.11\n"


def test_none_new_enough_fails_with_one_line(tmp_path: Path) -> None:
    """No Python 3.11+: exit 1 and one line naming what was tried, nothing on stdout."""
    path = make_pythons(tmp_path / "bin", real=set(), old={"python3", "python3.12"})
    done = find_python(path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "python3, python3.13, python3.12, python3.11" in done.stderr


def test_python_variable_overrides(tmp_path: Path) -> None:
    """PYTHON is used as it is, and an old PYTHON is refused rather than replaced by python3."""
    path = make_pythons(tmp_path / "bin", real={"python3", "mine"}, old={"old"})
    assert find_python(path, str(path / "mine")).stdout == f"{path / 'mine'}\n"
    refused = find_python(path, str(path / "old"))
    assert refused.returncode == 1 and f"PYTHON={path / 'old'}" in refused.stderr
