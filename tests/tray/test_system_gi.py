"""installer/system_gi.py: a fresh virtual environment gets the distribution's PyGObject, and nothing else of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "installer" / "system_gi.py"
SYSTEM_SITE = Path("/usr/lib/python3/dist-packages")
TRAY_IMPORTS = ("import gi; gi.require_version('Gtk', '3.0'); gi.require_version('AyatanaAppIndicator3', '0.1'); "
                "from gi.repository import AyatanaAppIndicator3, Gtk")


def make_venv(python: str, where: Path) -> Path:
    """A bare virtual environment (no pip: nothing is downloaded); returns its python."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True, timeout=120)
    return where / "bin" / "python"


def imports(python: Path, code: str) -> bool:
    """True when `code` runs in a fresh interpreter."""
    return subprocess.run([str(python), "-c", code], capture_output=True, timeout=60).returncode == 0


def test_a_venv_of_the_distribution_python_version_gets_gi_and_only_gi(tmp_path: Path) -> None:
    """The tray's imports work after the script; other system packages stay invisible; a second run changes nothing."""
    if not (SYSTEM_SITE / "gi").is_dir() or not imports(Path("/usr/bin/python3"), TRAY_IMPORTS):
        pytest.skip("the distribution's python3-gi and gir1.2-ayatanaappindicator3-0.1 are needed")
    version = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout
    python = make_venv(sys.executable, tmp_path / "venv")
    if subprocess.run([str(python), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True,
                      check=True).stdout != version:
        pytest.skip("this Python's version differs from the distribution's python3")
    assert not imports(python, "import gi")
    for _ in range(2):
        done = subprocess.run([str(python), str(SCRIPT)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("PyGObject for the tray menu:"), done.stdout
    assert imports(python, TRAY_IMPORTS)
    others = [p.name for p in SYSTEM_SITE.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name != "gi"]
    assert others, "no other system package to check against"
    assert not any(imports(python, f"import {name}") for name in others[:5])
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    assert (site / "aifarm-system-gi.pth").read_text().strip() == str(tmp_path / "venv" / "system-gi")


def test_a_venv_of_another_python_version_is_left_as_it_was(tmp_path: Path) -> None:
    """No loadable python3-gi for that version: exit 1 with one line, and no link or .pth file behind."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [shutil.which(f"python3.{minor}") for minor in (13, 12, 10)]
    candidates += [str(p) for p in sorted(Path(sys.base_prefix).parent.glob("3.1*/bin/python3"))]  # pyenv's others
    other = next((p for p in candidates if p and subprocess.run(
        [p, "-c", f"import sys, venv; sys.exit('{version}' == '%d.%d' % sys.version_info[:2])"],
        capture_output=True, timeout=60).returncode == 0), None)
    if other is None:
        pytest.skip("no Python of another version to build a venv with")
    python = make_venv(other, tmp_path / "venv")
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "venv").rglob("*"))
    done = subprocess.run([str(python), str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 and "python3-gi" in done.stdout
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "venv").rglob("*")) == before
