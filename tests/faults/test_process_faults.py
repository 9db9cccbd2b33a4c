"""Faults with real processes: kill -9 ranks and workers, SIGTERM, a database restart, disk full."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import torch

from app.db.engine import create_database
from app.db.queries import claims as claim_queries
from app.db.queries import models as model_queries
from app.errors import Fenced
from app.files import sha256_file
from app.training.worker import load_checkpoint
from tests.agent.harness import AgentProcess, wait_for
from tests.mysql_server import start_server
from tests.training.e2e import checkpoints, mlp_task, read, run_state, submit, task, task_logs, upgraded, worker_pids

pytestmark = [pytest.mark.faults, pytest.mark.slow]
FAST = ("--heartbeat-interval", "1s")
FAILFAST = {"AIFARM_FAILURE_TIMEOUT": "3s"}


def _ended(url: str, task_id: int) -> bool:
    return task(url, task_id)["status"] in ("completed", "failed", "error")


def _resumed_steps(url: str, task_id: int) -> list[int]:
    return [int(m.split("at step ")[1].split()[0]) for m in task_logs(url, task_id) if m.startswith("resuming from")]


def _owner_path(agents: list[AgentProcess], row: dict) -> Path:
    owner = next(a for a in agents if a.client_id == row["client_id"])
    return owner.data_dir / row["path"]


async def test_kill_non_coordinator_agent_resumes_from_newest_checkpoint(tmp_path: Path, sqlite_url: str) -> None:
    """kill -9 rank 1's agent: the survivor stops within a few heartbeats, a new group resumes from the newest
    checkpoint written before the kill (no earlier step is trained again), and the task completes."""
    await upgraded(sqlite_url)
    agents = [AgentProcess(tmp_path, n, "--database-url", sqlite_url, *FAST, env=FAILFAST) for n in ("a", "b", "c")]
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("nonzero", n_clients=2, epochs=30, checkpoint="40 steps"))
        wait_for(lambda: len([r for r in checkpoints(sqlite_url, task_id) if r["type"] == "regular"]) >= 2, 90,
                 "two regular checkpoints")
        first = run_state(sqlite_url, task_id)
        detail = agents[0].api(f"/api/v1/tasks/{task_id}")
        rank1 = next(a for a in agents if a.client_id == next(x["client_id"] for x in detail["assignments"] if x["rank"] == 1))
        coordinator = next(a for a in agents if a.client_id == first["coordinator_id"])
        newest_before = max(r["metrics"]["step"] for r in checkpoints(sqlite_url, task_id))
        rank1.kill()
        killed = time.monotonic()
        wait_for(lambda: (run_state(sqlite_url, task_id) or {})["generation"] > first["generation"], 30,
                 "the attempt to end")
        wait_for(lambda: not worker_pids(coordinator.proc.pid) or run_state(sqlite_url, task_id)["generation"]
                 > first["generation"] + 1, 30, "the survivor's worker to stop")
        assert time.monotonic() - killed < 3 + 5 * 1 + 10  # failure_timeout + a few heartbeats + slack
        wait_for(lambda: _ended(sqlite_url, task_id), 240, "the task to complete after the kill")
        assert task(sqlite_url, task_id)["status"] == "completed"
        resumed = _resumed_steps(sqlite_url, task_id)
        assert resumed and resumed[0] >= newest_before
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()


async def test_killed_coordinator_restarted_cannot_write(tmp_path: Path, sqlite_url: str) -> None:
    """kill -9 rank 0's agent: exactly one new coordinator with a higher generation; the old agent, restarted,
    holds nothing and any write in its old generation is refused."""
    await upgraded(sqlite_url)
    agents = {n: AgentProcess(tmp_path, n, "--database-url", sqlite_url, *FAST, env=FAILFAST) for n in ("a", "b", "c")}
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("coord", n_clients=2, epochs=40, checkpoint="40 steps"))
        wait_for(lambda: any(r["type"] == "regular" for r in checkpoints(sqlite_url, task_id)), 90, "a checkpoint")
        first = run_state(sqlite_url, task_id)
        name = next(n for n, a in agents.items() if a.client_id == first["coordinator_id"])
        agents[name].kill()
        wait_for(lambda: (run_state(sqlite_url, task_id) or {}).get("coordinator_id") not in (None, first["coordinator_id"]),
                 60, "a new coordinator")
        second = run_state(sqlite_url, task_id)
        assert second["generation"] > first["generation"]
        agents[name] = AgentProcess(tmp_path, name, "--database-url", sqlite_url, *FAST, env=FAILFAST)
        time.sleep(3)
        db = create_database(sqlite_url)
        try:
            async with db.begin() as conn:
                held = await claim_queries.assignments_of_client(conn, first["coordinator_id"])
                assert all(h["generation"] != first["generation"] for h in held)
                with pytest.raises(Fenced):
                    await claim_queries.update_task_fenced(conn, task_id, first["generation"], first["coordinator_id"],
                                                           {"result": {"progress": 99}})
                with pytest.raises(Fenced):
                    await claim_queries.publish_rendezvous(conn, task_id, first["generation"], first["coordinator_id"],
                                                           "127.0.0.1", 1)
        finally:
            await db.dispose()
        coordinators = {run_state(sqlite_url, task_id)["coordinator_id"]}
        assert len(coordinators) == 1
    finally:
        for agent in agents.values():
            if agent.proc.poll() is None:
                agent.stop()


async def test_sigterm_commits_emergency_checkpoint_within_five_seconds(tmp_path: Path, sqlite_url: str) -> None:
    """SIGTERM to a training agent: the emergency checkpoint row is committed within 5 s; the task is re-queued."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    task_id = submit(tmp_path, sqlite_url, mlp_task("term", epochs=300, checkpoint="100000 steps"))
    wait_for(lambda: worker_pids(a.proc.pid) and task(sqlite_url, task_id)["status"] == "running", 60, "training")
    time.sleep(2)
    a.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_for(lambda: any(r["type"] == "emergency" for r in checkpoints(sqlite_url, task_id)), 10, "the emergency checkpoint")
    assert time.monotonic() - sent <= 5.0
    assert a.proc.wait(timeout=30) == 0
    a.stop()
    assert task(sqlite_url, task_id)["status"] == "pending"


async def test_database_restart_during_training_loses_nothing(tmp_path: Path) -> None:
    """Restart MariaDB mid-training: both agents survive, training goes on, and every epoch's log line and the
    final result are written after the reconnect."""
    server = start_server()
    try:
        url = server.url("ai_farm")
        await upgraded(url)
        agents = [AgentProcess(tmp_path, n, "--database-url", url, *FAST) for n in ("a", "b")]
        try:
            spec = mlp_task("outage", n_clients=2, epochs=12, samples=12000, checkpoint="200 steps")
            task_id = submit(tmp_path, url, spec)
            wait_for(lambda: task(url, task_id)["status"] == "running" and any(worker_pids(a.proc.pid) for a in agents),
                     60, "training to start")
            time.sleep(2)
            generation = run_state(url, task_id)["generation"]
            server.kill()
            time.sleep(6)
            assert all(a.proc.poll() is None for a in agents)
            server.restart()
            wait_for(lambda: _ended(url, task_id), 240, "the task to end after the restart")
            row = task(url, task_id)
            assert row["status"] == "completed", row["error_log"]
            assert run_state(url, task_id)["generation"] == generation  # it went on: no new attempt was needed
            logs = task_logs(url, task_id)
            for epoch in range(1, 13):
                assert sum(m.startswith(f"epoch {epoch} ended") for m in logs) == 1, (epoch, logs)
            assert row["result"]["progress"] == 100.0
        finally:
            for agent in agents:
                agent.stop()
    finally:
        server.stop()


async def test_kill_during_checkpoint_writes_never_leaves_a_bad_checkpoint(tmp_path: Path, sqlite_url: str) -> None:
    """kill -9 the worker again and again while it checkpoints every few steps: every checkpoint the database
    points to exists, matches its sha256 and loads with weights_only=True."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    rng = random.Random(4)
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("kills", epochs=400, samples=2000, checkpoint="3 steps",
                                                        max_attempts=100, keep_checkpoints=2))
        newest = -1
        for _ in range(8):
            def progressed() -> int:
                steps = [r["metrics"]["step"] for r in checkpoints(sqlite_url, task_id)]
                return max(steps, default=-1) if max(steps, default=-1) > newest else 0  # noqa: B023  (called in this iteration)

            newest = wait_for(progressed, 90, "a new checkpoint after the last kill")
            time.sleep(rng.uniform(0.0, 0.4))  # checkpoints come every 3 steps: the kill lands around a write
            for pid in worker_pids(a.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(2)
        assert a.proc.poll() is None
        rows = checkpoints(sqlite_url, task_id)
        assert rows
        for row in rows:
            path = a.data_dir / row["path"]
            assert sha256_file(path) == row["metrics"]["sha256"], row["path"]
            state = load_checkpoint(path, row["metrics"]["sha256"])
            assert isinstance(state["model"], dict)
        pointed = task(sqlite_url, task_id)["checkpoint_path"]
        assert pointed and (a.data_dir / pointed).exists()
        # A kill mid-write leaves a hidden temporary file; the next attempt on this machine removes it.
        wait_for(lambda: not list((a.data_dir / "checkpoints").rglob(".*.tmp")) and worker_pids(a.proc.pid), 60,
                 "the next attempt to clear half-written files")
    finally:
        a.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 24 MB tmpfs for the data dir (root only; skipped with the reason otherwise); unmounted after."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", f"aifarm-{uuid.uuid4().hex[:6]}", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


async def test_disk_full_during_checkpoint(tmp_path: Path, sqlite_url: str, small_disk: Path) -> None:
    """Fill the data dir's disk mid-training: a clear error, the previous checkpoint stays valid, the task is
    retried, and the agent keeps running (and finishes once there is room again)."""
    await upgraded(sqlite_url)
    a = AgentProcess(small_disk, "data", "--database-url", sqlite_url, *FAST)
    filler = small_disk / "filler"
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("full", epochs=60, samples=4000, checkpoint="30 steps",
                                                        max_attempts=50, model_options={"hidden": [256, 256]}))
        wait_for(lambda: any(r["type"] == "regular" for r in checkpoints(sqlite_url, task_id)), 60, "a checkpoint")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1):  # to the last byte: a small checkpoint must not fit
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    continue
        finally:
            os.close(fd)
        wait_for(lambda: "No space left on device" in (task(sqlite_url, task_id)["error_log"] or ""), 60,
                 "the disk-full error")
        assert a.proc.poll() is None
        for row in checkpoints(sqlite_url, task_id):
            path = a.data_dir / row["path"]
            if path.exists():
                assert sha256_file(path) == row["metrics"]["sha256"]
        filler.unlink()
        wait_for(lambda: _ended(sqlite_url, task_id), 240, "the task to finish once there is room")
        assert task(sqlite_url, task_id)["status"] == "completed"
        assert (run_state(sqlite_url, task_id) or {})["failures"] >= 1
        version = await read(sqlite_url, model_queries.get_version, "full", None)
        assert isinstance(torch.load(a.data_dir / version["url"].split("/", 3)[3], weights_only=True), dict)
    finally:
        a.stop()
