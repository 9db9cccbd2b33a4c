"""installer/install.sh in a temporary HOME: launcher, autostart, upgrade keeping data, uninstall leaving nothing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from app.installer import xdg_autostart_entry
from tests.installer.pythons import NAMES, make_pythons

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_installer(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installer with HOME pointing at a temporary directory."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIFARM_", "XDG_", "VIRTUAL_ENV", "PYTHON"))}
    base.update({"HOME": str(home), "AIFARM_TORCH_SPEC": "torch==2.13.0", "PATH": os.environ["PATH"]})
    return subprocess.run(["bash", str(ROOT / "installer" / "install.sh"), *args], check=False, capture_output=True,
                          text=True, env=base | (env or {}), timeout=900, stdin=subprocess.DEVNULL)


def dashboard_answers(command: list[str], env: dict[str, str]) -> None:
    """Start an agent with `command`; its dashboard answers /healthz; then stop it with SIGINT."""
    agent = subprocess.Popen([*command, "--headless", "--port", "0", "--peer-port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        match = re.search(r"dashboard at (http://\S+)", line)
        assert match, line + (agent.stderr.read() if agent.poll() is not None else "")
        with urllib.request.urlopen(match.group(1) + "healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(timeout=60)  # a loaded machine may take a while; stop time is asserted elsewhere


def test_install_upgrade_uninstall(tmp_path: Path) -> None:
    """A fresh clone installs; the launcher runs an agent whose dashboard answers; re-running keeps the data."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to make a fresh clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["rsync", "-a", "--exclude", ".git", "--exclude", ".venv", "--exclude", "__pycache__",
                    f"{ROOT}/", f"{clone}/"], check=False)  # also what is not committed yet
    home = tmp_path / "home"
    home.mkdir()
    done = run_installer(home, "--source", str(clone), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PyTorch will be installed as 'torch==2.13.0'" in done.stdout
    launcher = home / ".local" / "bin" / "aifarm"
    desktop = home / ".config" / "autostart" / "aifarm.desktop"
    assert os.access(launcher, os.X_OK)
    assert desktop.read_text() == xdg_autostart_entry(str(launcher))

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFARM_")}
    env["HOME"] = str(home)
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    dashboard_answers([str(launcher), "run"], env)
    data = home / ".local" / "share" / "aifarm"
    client_id = (data / "client_id").read_text()

    again = run_installer(home, "--source", str(clone), "--yes")
    assert again.returncode == 0 and "Upgrading AI Farm" in again.stdout
    assert (data / "client_id").read_text() == client_id and (data / "aifarm.sqlite3").exists()
    dashboard_answers([str(data / "venv" / "bin" / "aifarm-tray")], env)  # the launcher of `aifarm run` with the tray

    keep = run_installer(home, "--uninstall")
    assert keep.returncode == 0 and not launcher.exists() and not desktop.exists() and not (data / "venv").exists()
    assert (data / "client_id").exists()
    purge = run_installer(home, "--uninstall", "--purge")
    assert purge.returncode == 0 and not data.exists()
    # pip's own cache and a Rust toolchain probe run by pip builds are not the installer's files.
    leftovers = [p for p in home.rglob("*") if p.is_file() and not {".cache", ".rustup"} & set(p.parts)]
    assert leftovers == [], leftovers


def test_install_uses_the_first_new_enough_python_and_stops_at_a_failed_pip_call(tmp_path: Path) -> None:
    """Old python3 and python3.13: python3.12 is used; a torch that pip cannot find ends it, naming the call."""
    pythons = make_pythons(tmp_path / "bin", real={"python3.12"}, old=set(NAMES) - {"python3.12"})
    home = tmp_path / "home"
    home.mkdir()
    no_index = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "no-wheels")}
    (tmp_path / "no-wheels").mkdir()
    done = run_installer(home, "--yes", "--torch", "torch==0.0.1",
                         env={"PATH": f"{pythons}:{os.environ['PATH']}"} | no_index)
    assert done.returncode != 0
    assert "Using python3.12 (" in done.stdout
    assert (home / ".local" / "share" / "aifarm" / "venv" / "bin" / "python").exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("aifarm install: error:")]
    assert len(errors) == 1 and "torch==0.0.1" in errors[0], done.stderr
    assert not (home / ".local" / "bin" / "aifarm").exists()
    assert not (home / ".config" / "autostart" / "aifarm.desktop").exists()
