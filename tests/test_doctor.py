"""`aifarm doctor` as a volunteer runs it: a real process against real files, ports and databases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.agent.harness import agent_env
from tests.training.e2e import upgraded


def _doctor(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "doctor", "--data-dir", str(tmp_path / "data"), *args],
                          capture_output=True, text=True, timeout=120, env=agent_env(tmp_path, env))


def _line(out: str, check: str) -> str:
    return next(line for line in out.splitlines() if f"] {check}:" in line)


def test_fresh_machine_has_no_problem_and_names_every_check(tmp_path: Path) -> None:
    """A new data dir: exit 0, the embedded database is created at first run, each check has a line."""
    done = _doctor(tmp_path, env={"AIFARM_DASHBOARD_PORT": "0", "AIFARM_PEER_PORT": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("database", "dashboard port", "peer port", "multicast", "firewall", "gpu", "training", "tray",
                  "sandbox", "disk"):
        assert _line(done.stdout, check)
    assert "created at the first `aifarm run`" in _line(done.stdout, "database")
    assert not (tmp_path / "data" / "aifarm.sqlite3").exists()


def test_a_port_in_use_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    """Another program on the dashboard port: FAIL naming the address, the fix below it, exit 1."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _doctor(tmp_path, env={"AIFARM_DASHBOARD_PORT": str(port), "AIFARM_PEER_PORT": "0"})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    index = lines.index(_line(done.stdout, "dashboard port"))
    assert lines[index].startswith("[FAIL]") and f"127.0.0.1:{port} is in use" in lines[index]
    assert lines[index + 1].strip().startswith("fix:") and "dashboard_port" in lines[index + 1]


async def test_database_schema_is_checked(tmp_path: Path) -> None:
    """A current database is ok with its revision; one without the schema says to run `aifarm db upgrade`."""
    good = f"sqlite:///{tmp_path / 'good.sqlite3'}"
    await upgraded(good)
    done = _doctor(tmp_path, "--database-url", good, env={"AIFARM_DASHBOARD_PORT": "0", "AIFARM_PEER_PORT": "0"})
    assert done.returncode == 0 and "at schema revision" in _line(done.stdout, "database")
    (tmp_path / "empty.sqlite3").write_bytes(b"")
    done = _doctor(tmp_path, "--database-url", f"sqlite:///{tmp_path / 'empty.sqlite3'}",
                   env={"AIFARM_DASHBOARD_PORT": "0", "AIFARM_PEER_PORT": "0"})
    assert done.returncode == 1
    assert _line(done.stdout, "database").startswith("[FAIL]") and "aifarm db upgrade" in done.stdout
    missing = tmp_path / "nowhere" / "x.sqlite3"
    done = _doctor(tmp_path, "--database-url", f"sqlite:///{missing}", env={"AIFARM_DASHBOARD_PORT": "0",
                                                                            "AIFARM_PEER_PORT": "0"})
    assert done.returncode == 1 and "does not exist" in _line(done.stdout, "database")
    assert not missing.parent.exists()


def test_json_and_missing_bubblewrap(tmp_path: Path) -> None:
    """--json lists every finding; without bwrap on PATH the sandbox check says how to install it."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "bwrap").exists())
    done = _doctor(tmp_path, "--json", env={"PATH": path, "AIFARM_DASHBOARD_PORT": "0", "AIFARM_PEER_PORT": "0"})
    findings = {f["check"]: f for f in json.loads(done.stdout)}
    assert {"database", "sandbox", "disk", "gpu"} <= set(findings)
    assert findings["sandbox"]["verdict"] == "warning" and "bubblewrap" in findings["sandbox"]["fix"]
    assert all(set(f) == {"check", "verdict", "detail", "fix"} for f in findings.values())
