"""Two real agents train a `sync: "diloco"` task: it completes, resumes after a kill, and learns as well as DDP."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.agent.harness import AgentProcess, wait_for
from tests.training.e2e import checkpoints, mlp_task, run_state, submit, task, task_logs, upgraded, worker_pids

FAST = ("--heartbeat-interval", "1s")
pytestmark = pytest.mark.slow
SHAPE = {"epochs": 4, "samples": 6000, "checkpoint": "40 steps", "model_options": {"hidden": [64, 32]}}


def _done(url: str, task_id: int) -> bool:
    return task(url, task_id)["status"] in ("completed", "failed", "error")


async def test_diloco_task_resumes_after_a_kill_and_matches_ddp_accuracy(tmp_path: Path, sqlite_url: str) -> None:
    await upgraded(sqlite_url)
    env = {"AIFARM_FAILURE_TIMEOUT": "3s"}
    agents = [AgentProcess(tmp_path, name, "--database-url", sqlite_url, *FAST, env=env) for name in ("a", "b")]
    try:
        ddp_id = submit(tmp_path, sqlite_url, mlp_task("ddp-ref", n_clients=2, sync="ddp", **SHAPE))
        wait_for(lambda: _done(sqlite_url, ddp_id), 240, "the DDP reference")
        ddp = task(sqlite_url, ddp_id)
        assert ddp["status"] == "completed", ddp["error_log"]

        task_id = submit(tmp_path, sqlite_url, mlp_task("diloco", n_clients=2, sync="diloco", inner_steps=10,
                                                        compression="fp16", **SHAPE))
        wait_for(lambda: any(r["type"] == "regular" and r["metrics"]["step"] >= 80
                             for r in checkpoints(sqlite_url, task_id)), 180, "DiLoCo checkpoints")
        pids = worker_pids(agents[1].proc.pid)
        assert pids, "no worker process found"
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: _done(sqlite_url, task_id), 300, "the resumed DiLoCo task to end")
        row = task(sqlite_url, task_id)
        assert row["status"] == "completed", row["error_log"]
        logs = task_logs(sqlite_url, task_id)
        resumed = [m for m in logs if m.startswith("resuming from")]
        assert resumed and int(resumed[-1].split("at step ")[1].split()[0]) >= 80, logs
        assert (run_state(sqlite_url, task_id) or {})["failures"] >= 1
        assert "sync: diloco, H=10, fp16: set by the task" in logs
        # Every DiLoCo checkpoint is taken at an outer step (a multiple of H) and carries the outer state.
        assert all(r["metrics"]["step"] % 10 == 0 for r in checkpoints(sqlite_url, task_id) if r["type"] != "final")
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()
    result, reference = row["result"], ddp["result"]
    assert result["step"] == reference["step"]  # the same number of samples
    assert abs(result["metrics"]["val_accuracy"] - reference["metrics"]["val_accuracy"]) <= 0.02, (result, reference)
    assert result["sync"] == "diloco, H=10, fp16: set by the task" and reference["sync"] == "ddp: set by the task"
    # fp16 payload every 10 steps: a fifth of DDP's fp32 gradients every step, per step on average.
    assert 0 < result["bytes_per_step"] < reference["bytes_per_step"] / 4
    assert 0 < result["utilisation"] <= 1 and 0 < reference["utilisation"] <= 1
