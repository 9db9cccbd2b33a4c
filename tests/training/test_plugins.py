"""A recipe a volunteer installed as an `aifarm.recipes` entry point trains like a built-in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.training.messages import Failed, Finished
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import mlp_task, run_worker, task, upgraded, worker_spec

PLUGIN = '''
import torch


def build(options, info):
    """A linear classifier: the smallest model a plugin can add."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(info.input_shape[0], info.n_classes))
'''


IMAGE_PLUGIN = '''
import torch


def build(options, info):
    """A convolution over (1, 28, 28) images: it cannot take anything else."""
    if info.kind != "image" or tuple(info.input_shape) != (1, 28, 28):
        raise ValueError(f"fed {info.kind} data of shape {tuple(info.input_shape)}")
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 7 * 7, info.n_classes))


build.input_kind = "image"
'''


def install_plugin(root: Path, source: str = PLUGIN, model: str = "linear") -> Path:
    """A real installed distribution (module + dist-info with entry points) in a directory for PYTHONPATH."""
    root.mkdir()
    (root / "aifarm_linear_plugin.py").write_text(source)
    info = root / "aifarm_linear_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aifarm-linear-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[aifarm.recipes]\nmodel.{model} = aifarm_linear_plugin:build\n")
    return root


def image_task(model: str) -> dict[str, Any]:
    """A short task config: the model on synthetic 28x28 images."""
    return {"name": "images", "model": model, "dataset": "synthetic", "batch_size": 32, "learning_rate": 0.01,
            "epochs": 1, "dataset_options": {"kind": "image", "samples": 256, "classes": 3}}


def test_installed_model_is_fed_the_input_kind_it_declares(tmp_path: Path) -> None:
    """A plugin declaring `build.input_kind = "image"` gets (1, 28, 28) images, not the default flattened vectors."""
    env = {"PYTHONPATH": os.pathsep.join([str(install_plugin(tmp_path / "site", IMAGE_PLUGIN, "conv")), os.getcwd()])}
    messages = run_worker(worker_spec(tmp_path / "run", image_task("conv")), env)
    failed = [m for m in messages if isinstance(m, Failed)]
    assert not failed, failed[0].error
    finished = [m for m in messages if isinstance(m, Finished)]
    assert len(finished) == 1 and finished[0].step == 7
    assert (tmp_path / "run" / "models" / "images-task1-g1.safetensors").is_file()


def test_installed_model_declaring_an_unknown_input_kind_is_refused_in_one_line(tmp_path: Path) -> None:
    """An input kind the worker does not know ends the run as a permanent recipe error naming it; nothing is written."""
    source = IMAGE_PLUGIN.replace('build.input_kind = "image"', 'build.input_kind = "audio"')
    env = {"PYTHONPATH": os.pathsep.join([str(install_plugin(tmp_path / "site", source, "conv")), os.getcwd()])}
    messages = run_worker(worker_spec(tmp_path / "run", image_task("conv")), env)
    assert messages == [Failed(error="RecipeError: installed model 'conv' declares input kind 'audio'; "
                                     "expected one of vector, image, tokens", traceback="", permanent=True)]
    assert not (tmp_path / "run").exists()


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
