"""The volunteer's pause: no new claims, immediate release through the emergency checkpoint, or finish first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.db.engine import create_database
from app.db.queries import tasks as task_queries
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import checkpoints, mlp_task, submit, task, task_logs, upgraded, worker_pids

FAST = ("--heartbeat-interval", "1s")
pytestmark = pytest.mark.slow


def aifarm(tmp_path: Path, agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """A CLI command against the agent's data dir."""
    return subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(agent.data_dir)],
                          capture_output=True, text=True, env=agent_env(tmp_path), timeout=60)


async def test_pause_stops_claims_and_releases_work_with_an_emergency_checkpoint(tmp_path: Path, sqlite_url: str) -> None:
    """`aifarm pause`: the running task is checkpointed and re-queued, nothing new is claimed; resume claims again."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("paused", epochs=200, checkpoint="100000 steps"))
        wait_for(lambda: worker_pids(a.proc.pid), 60, "training to start")
        time.sleep(1.5)
        done = aifarm(tmp_path, a, "pause")
        assert done.returncode == 0 and "paused" in done.stdout, done.stderr
        wait_for(lambda: task(sqlite_url, task_id)["status"] == "pending", 30, "the task to be released")
        assert [r for r in checkpoints(sqlite_url, task_id) if r["type"] == "emergency"]
        time.sleep(3)
        assert task(sqlite_url, task_id)["status"] == "pending"  # a paused agent claims nothing
        assert a.api("/api/v1/status")["donation"]["paused"] is True
        assert aifarm(tmp_path, a, "resume").returncode == 0
        wait_for(lambda: task(sqlite_url, task_id)["status"] == "running", 30, "the task to be claimed again")
        wait_for(lambda: any(m.startswith("resuming from emergency") for m in task_logs(sqlite_url, task_id)), 30,
                 "a resume from the emergency checkpoint")
    finally:
        a.stop()


async def test_finish_current_then_pause(tmp_path: Path, sqlite_url: str) -> None:
    """`aifarm pause --finish-current`: the running task completes, the next one waits."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        first = submit(tmp_path, sqlite_url, mlp_task("first", epochs=6))
        wait_for(lambda: task(sqlite_url, first)["status"] == "running", 30, "the first task to run")
        done = aifarm(tmp_path, a, "pause", "--finish-current")
        assert done.returncode == 0 and "finishing" in done.stdout
        second = submit(tmp_path, sqlite_url, mlp_task("second", epochs=1))
        wait_for(lambda: task(sqlite_url, first)["status"] == "completed", 120, "the first task to complete")
        time.sleep(3)
        assert task(sqlite_url, second)["status"] == "pending"
        assert a.api("/api/v1/status")["donation"]["paused"] is True
    finally:
        a.stop()


async def test_pause_for_a_duration_resumes_by_itself(tmp_path: Path, sqlite_url: str) -> None:
    """`aifarm pause --for 3s`: nothing is claimed during the pause, then work starts without a resume."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        assert aifarm(tmp_path, a, "pause", "--for", "3s").returncode == 0
        task_id = submit(tmp_path, sqlite_url, mlp_task("later", epochs=1))
        time.sleep(1.5)
        assert task(sqlite_url, task_id)["status"] == "pending"
        wait_for(lambda: task(sqlite_url, task_id)["status"] != "pending", 20, "the pause to expire")
        bad = aifarm(tmp_path, a, "pause", "--for", "soon")
        assert bad.returncode != 0 and "--for" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        a.stop()


async def test_task_naming_a_recipe_not_installed_here_is_skipped_not_failed(tmp_path: Path, sqlite_url: str) -> None:
    """A task another machine could run (an installed recipe this one lacks) stays pending; this agent skips it."""
    await upgraded(sqlite_url)
    db = create_database(sqlite_url)
    async with db.begin() as conn:
        spec = mlp_task("plugin")
        config = {**spec["config"], "model": "someone_elses_model"}
        task_id = await task_queries.insert_task(conn, type="training", requirements={}, config=config)
    await db.dispose()
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        wait_for(lambda: any("skipped" in m for m in task_logs(sqlite_url, task_id)), 30, "the skip")
        time.sleep(3)
        row = task(sqlite_url, task_id)
        assert row["status"] == "pending"
        assert sum("skipped" in m for m in task_logs(sqlite_url, task_id)) == 1  # not claimed over and over
    finally:
        a.stop()


def test_pause_without_a_running_agent_says_so(tmp_path: Path) -> None:
    """No agent for this data dir: one clear line."""
    done = subprocess.run([sys.executable, "-m", "app", "pause", "--data-dir", str(tmp_path / "none")],
                          capture_output=True, text=True, env=agent_env(tmp_path), timeout=60)
    assert done.returncode != 0 and "no agent is running" in done.stderr
