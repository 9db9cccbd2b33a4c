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

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_installer(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installer with HOME pointing at a temporary directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFARM_", "XDG_", "VIRTUAL_ENV"))}
    env.update({"HOME": str(home), "AIFARM_TORCH_SPEC": "torch==2.13.0", "PATH": os.environ["PATH"]})
    return subprocess.run(["bash", str(ROOT / "installer" / "install.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=900, stdin=subprocess.DEVNULL)


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
    assert f'Exec="{launcher}" run' in desktop.read_text()

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFARM_")}
    env["HOME"] = str(home)
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    agent = subprocess.Popen([str(launcher), "run", "--headless", "--port", "0", "--peer-port", "0"],
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
        agent.wait(timeout=30)
    data = home / ".local" / "share" / "aifarm"
    client_id = (data / "client_id").read_text()

    again = run_installer(home, "--source", str(clone), "--yes")
    assert again.returncode == 0 and "Upgrading AI Farm" in again.stdout
    assert (data / "client_id").read_text() == client_id and (data / "aifarm.sqlite3").exists()

    keep = run_installer(home, "--uninstall")
    assert keep.returncode == 0 and not launcher.exists() and not desktop.exists() and not (data / "venv").exists()
    assert (data / "client_id").exists()
    purge = run_installer(home, "--uninstall", "--purge")
    assert purge.returncode == 0 and not data.exists()
    # pip's own cache and a Rust toolchain probe run by pip builds are not the installer's files.
    leftovers = [p for p in home.rglob("*") if p.is_file() and not {".cache", ".rustup"} & set(p.parts)]
    assert leftovers == [], leftovers
