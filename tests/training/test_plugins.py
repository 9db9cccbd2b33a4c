"""A recipe a volunteer installed as an `aifarm.recipes` entry point trains like a built-in one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import mlp_task, task, upgraded

PLUGIN = '''
import torch


def build(options, info):
    """A linear classifier: the smallest model a plugin can add."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(info.input_shape[0], info.n_classes))
'''


def install_plugin(root: Path) -> Path:
    """A real installed distribution (module + dist-info with entry points) in a directory for PYTHONPATH."""
    root.mkdir()
    (root / "aifarm_linear_plugin.py").write_text(PLUGIN)
    info = root / "aifarm_linear_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aifarm-linear-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aifarm.recipes]\nmodel.linear = aifarm_linear_plugin:build\n")
    return root


@pytest.mark.slow
async def test_installed_model_recipe_trains(tmp_path: Path, sqlite_url: str) -> None:
    """`model.linear` from an installed plugin: accepted at submission where installed, trained by the worker."""
    await upgraded(sqlite_url)
    env = {"PYTHONPATH": str(install_plugin(tmp_path / "site"))}
    spec = mlp_task("linear", epochs=2)
    spec["config"]["model"] = "linear"
    path = tmp_path / "task.json"
    path.write_text(json.dumps(spec))
    without = subprocess.run([sys.executable, "-m", "app", "submit", str(path), "--database-url", sqlite_url],
                             capture_output=True, text=True, env=agent_env(tmp_path), timeout=60)
    assert without.returncode != 0 and "unknown model 'linear'" in without.stderr
    done = subprocess.run([sys.executable, "-m", "app", "submit", str(path), "--database-url", sqlite_url],
                          capture_output=True, text=True, env=agent_env(tmp_path, env), timeout=60)
    assert done.returncode == 0, done.stderr
    task_id = int(done.stdout)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, "--heartbeat-interval", "1s", env=env)
    try:
        wait_for(lambda: task(sqlite_url, task_id)["status"] in ("completed", "failed", "error"), 120, "the plugin task")
        row = task(sqlite_url, task_id)
        assert row["status"] == "completed", row["error_log"]
        assert row["result"]["metrics"]["val_accuracy"] > 0.5
    finally:
        a.stop()
