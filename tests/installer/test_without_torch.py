"""`pip install .` without the `train` extra: operator and organiser commands work, and the agent trains nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent.harness import agent_env
from tests.training.e2e import mlp_task

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with AI Farm installed from this checkout, without the train extra."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-c", str(ROOT / "installer" / "constraints.txt"), str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_no_torch_and_no_numpy_are_installed(bare_venv: Path) -> None:
    """The base install brings neither PyTorch nor NumPy."""
    for name in ("torch", "numpy"):
        found = subprocess.run([str(bare_venv / "bin" / "python"), "-c", f"import {name}"], capture_output=True)
        assert found.returncode != 0, f"{name} was installed without the train extra"


def test_operator_commands_and_a_non_training_agent(bare_venv: Path, tmp_path: Path) -> None:
    """db upgrade, submit and tasks work; the agent serves, says it trains nothing, and claims no task."""
    aifarm = str(bare_venv / "bin" / "aifarm")
    url = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    env = agent_env(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([aifarm, *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    assert run("db", "upgrade", "--database-url", url).returncode == 0
    (tmp_path / "task.json").write_text(json.dumps(mlp_task("bare")))
    submitted = run("submit", str(tmp_path / "task.json"), "--database-url", url, "--json")
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["id"]
    listed = run("tasks", "--database-url", url, "--json")
    assert listed.returncode == 0 and [t["id"] for t in json.loads(listed.stdout)["tasks"]] == [task_id]

    data_dir = tmp_path / "agent"
    log_file = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen([aifarm, "run", "--headless", "--data-dir", str(data_dir), "--database-url", url,
                              "--port", "0", "--peer-port", "0", "--heartbeat-interval", "1s"],
                             stdout=subprocess.PIPE, stderr=log_file, text=True, env=env)
    try:
        assert agent.stdout is not None
        assert "running; dashboard at" in agent.stdout.readline()
        status = json.loads(run("status", "--data-dir", str(data_dir), "--json").stdout)
        assert status["running"] and "trains nothing" in status["training"] and "ai-farm[train]" in status["training"]
        time.sleep(5)  # several claim rounds of the scheduler
        shown = json.loads(run("task", str(task_id), "--database-url", url, "--json").stdout)
        assert shown["status"] == "pending"
    finally:
        agent.terminate()
        agent.wait(60)
        log_file.close()
    assert agent.returncode == 0
    log = (tmp_path / "agent.log").read_text()
    assert "trains nothing: torch and numpy are not installed" in log and "Traceback" not in log
