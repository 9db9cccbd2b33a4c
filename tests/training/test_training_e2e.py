"""Real agents train real tasks: distributed completion, model versions, IDX over HTTP, kill -9, SIGTERM, tampering."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.db.queries import models as model_queries
from app.files import sha256_file
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import (
    checkpoints,
    mlp_task,
    read,
    run_state,
    submit,
    task,
    task_logs,
    upgraded,
    worker_pids,
)

FAST = ("--heartbeat-interval", "1s")
pytestmark = pytest.mark.slow


def _done(url: str, task_id: int) -> bool:
    return task(url, task_id)["status"] in ("completed", "failed", "error")


def _file_of(agents: list[AgentProcess], row: dict) -> Path:
    owner = next(a for a in agents if a.client_id == row["client_id"])
    return owner.data_dir / row["path"]


async def test_distributed_mlp_completes_with_identical_ranks_checkpoints_and_model(tmp_path: Path, mysql_url: str) -> None:
    """Two agents, n_clients=2: completed, same parameters on both ranks, verified files, a pullable model."""
    await upgraded(mysql_url)
    a = AgentProcess(tmp_path, "a", "--database-url", mysql_url, *FAST)
    b = AgentProcess(tmp_path, "b", "--database-url", mysql_url, *FAST)
    try:
        task_id = submit(tmp_path, mysql_url, mlp_task("twohosts", n_clients=2))
        wait_for(lambda: _done(mysql_url, task_id), 120, "the distributed task to end")
        row = task(mysql_url, task_id)
        assert row["status"] == "completed", row["error_log"]
        result = row["result"]
        assert result["progress"] == 100.0 and result["step"] > 0
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(result["metrics"])
        assert result["metrics"]["val_accuracy"] > 0.5

        detail = a.api(f"/api/v1/tasks/{task_id}")
        hashes = {x["client_id"]: x["metrics"]["params_sha256"] for x in detail["assignments"]}
        assert set(hashes) == {a.client_id, b.client_id}
        assert len(set(hashes.values())) == 1  # both ranks ended with identical parameters
        assert all(x["status"] == "completed" for x in detail["assignments"])

        rows = checkpoints(mysql_url, task_id)
        kinds = {r["type"] for r in rows}
        assert {"regular", "final", "distributed"} <= kinds
        for r in rows:
            assert sha256_file(_file_of([a, b], r)) == r["metrics"]["sha256"]
        assert row["checkpoint_path"] == next(r["path"] for r in rows if r["type"] == "final")

        version = await read(mysql_url, model_queries.get_version, "twohosts", None)
        assert version["version"] == "1" and version["url"].startswith("aifarm://")
        folder = tmp_path / "pulled"
        done = subprocess.run([sys.executable, "-m", "app", "models", "pull", "twohosts:1", "-o", str(folder),
                               "--database-url", mysql_url, "--data-dir", str(b.data_dir), "--quiet"],
                              capture_output=True, text=True, env=agent_env(tmp_path), timeout=60)
        assert done.returncode == 0, done.stderr
        out = folder / "twohosts-v1.safetensors"
        assert hashlib.sha256(out.read_bytes()).hexdigest() == version["hash"]
        weights = load_file(str(out))
        assert all(isinstance(v, torch.Tensor) for v in weights.values())
        assert json.loads(out.with_suffix(".json").read_text())["recipe"] == "mlp"

        def replicated() -> bool:
            current = __import__("tests.training.e2e", fromlist=["sync"]).sync(
                read(mysql_url, model_queries.get_version, "twohosts", "1"))
            return bool(current["config"].get("replicas"))

        wait_for(replicated, 20, "the model to be copied to the other agent")
        version = await read(mysql_url, model_queries.get_version, "twohosts", "1")
        (replica,) = version["config"]["replicas"]
        holder = a if replica == a.client_id else b
        relative = version["url"].split("/", 3)[3]
        copy = holder.data_dir / "fetched" / version["url"].split("/")[2] / relative
        assert sha256_file(copy) == version["hash"]
    finally:
        a.stop()
        b.stop()


def _idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, len(images), 28, 28) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


@pytest.fixture
def idx_files(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder (to be a dataset_dir) with a small MNIST-format dataset (gzipped IDX), and the files' sha256."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 1200)
    patterns = rng.random((10, 28, 28)) > 0.6
    images = (patterns[labels] * 200 + rng.random((1200, 28, 28)) * 55).astype(np.uint8)
    root = tmp_path / "datasets"
    root.mkdir()
    files = {"images": gzip.compress(_idx_images(images)), "labels": gzip.compress(_idx_labels(labels))}
    for name, data in files.items():
        (root / f"{name}.idx.gz").write_bytes(data)
    return root, {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


async def test_cnn_on_idx_files_in_dataset_dirs_learns(tmp_path: Path, sqlite_url: str,
                                                       idx_files: tuple[Path, dict[str, str]]) -> None:
    """A cnn on a generated IDX dataset read from the volunteer's dataset_dirs, verified by its sha256, reaches
    accuracy far above chance (downloads by URL, which need a farm dataset host, are covered in test_recipes)."""
    root, sha = idx_files
    dirs = {"AIFARM_DATASET_DIRS": str(root)}
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST, env=dirs)
    try:
        spec = {"type": "training", "requirements": {}, "priority": 0, "config": {
            "name": "digits", "model": "cnn", "dataset": "mnist", "batch_size": 32, "learning_rate": 0.003,
            "epochs": 2, "distributed": False, "n_clients": 1,
            "model_options": {"channels": [8, 16], "hidden": 32},
            "dataset_options": {"images": f"{root}/images.idx.gz", "labels": f"{root}/labels.idx.gz",
                                "images_sha256": sha["images"], "labels_sha256": sha["labels"]}}}
        task_id = submit(tmp_path, sqlite_url, spec, env=dirs)
        wait_for(lambda: _done(sqlite_url, task_id), 180, "the cnn task to end")
        row = task(sqlite_url, task_id)
        assert row["status"] == "completed", row["error_log"]
        assert row["result"]["metrics"]["val_accuracy"] > 0.5  # chance is 0.1
    finally:
        a.stop()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


async def test_killed_worker_resumes_from_checkpoint_and_matches_uninterrupted_run(tmp_path: Path, sqlite_url: str) -> None:
    """kill -9 the worker: the task resumes from its newest checkpoint (not step 0) and ends with the same weights."""
    await upgraded(sqlite_url)
    spec = mlp_task("resumable", epochs=4, samples=6000, checkpoint="40 steps", model_options={"hidden": [64, 32], "dropout": 0.1})
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        reference_id = submit(tmp_path, sqlite_url, spec)
        wait_for(lambda: _done(sqlite_url, reference_id), 120, "the reference run")
        assert task(sqlite_url, reference_id)["status"] == "completed"

        task_id = submit(tmp_path, sqlite_url, spec)
        wait_for(lambda: any(r["type"] == "regular" and r["metrics"]["step"] >= 120 for r in checkpoints(sqlite_url, task_id)),
                 120, "a few regular checkpoints")
        pids = worker_pids(a.proc.pid)
        assert pids, "no worker process found"
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: _done(sqlite_url, task_id), 180, "the resumed run to end")
        row = task(sqlite_url, task_id)
        assert row["status"] == "completed", row["error_log"]
        logs = task_logs(sqlite_url, task_id)
        resumed = [m for m in logs if m.startswith("resuming from")]
        assert resumed, logs
        step = int(resumed[-1].split("at step ")[1].split()[0])
        assert step >= 120
        assert (run_state(sqlite_url, task_id) or {})["failures"] == 1
    finally:
        a.stop()
    ref = await read(sqlite_url, model_queries.get_version, "resumable", "1")
    again = await read(sqlite_url, model_queries.get_version, "resumable", "2")
    first = _weights(a.data_dir / ref["url"].split("/", 3)[3])
    second = _weights(a.data_dir / again["url"].split("/", 3)[3])
    assert first.keys() == second.keys()
    for key in first:
        assert torch.allclose(first[key], second[key], atol=1e-5), key


async def test_sigterm_writes_emergency_checkpoint_and_requeues(tmp_path: Path, sqlite_url: str) -> None:
    """SIGTERM to the agent mid-run: an emergency checkpoint row within seconds, the task back in the queue."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    task_id = submit(tmp_path, sqlite_url, mlp_task("pausable", epochs=200, samples=4000, checkpoint="100000 steps"))
    wait_for(lambda: task(sqlite_url, task_id)["status"] == "running" and worker_pids(a.proc.pid), 60, "training to start")
    time.sleep(2)
    sent = time.monotonic()
    assert a.stop(signal.SIGTERM) == 0
    assert time.monotonic() - sent < 15
    rows = [r for r in checkpoints(sqlite_url, task_id) if r["type"] == "emergency"]
    assert len(rows) == 1 and rows[0]["metrics"]["step"] > 0
    row = task(sqlite_url, task_id)
    assert row["status"] == "pending" and row["checkpoint_path"] == rows[0]["path"]
    assert sha256_file(a.data_dir / rows[0]["path"]) == rows[0]["metrics"]["sha256"]
    assert (run_state(sqlite_url, task_id) or {})["failures"] == 0  # a volunteer's stop is not a failure


async def test_altered_checkpoint_is_refused_and_the_previous_one_used(tmp_path: Path, sqlite_url: str) -> None:
    """Flip one byte of the newest checkpoint: the agent refuses it, says so, and resumes from the one before."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    task_id = submit(tmp_path, sqlite_url, mlp_task("tampered", epochs=200, samples=4000, checkpoint="30 steps"))
    wait_for(lambda: len([r for r in checkpoints(sqlite_url, task_id) if r["type"] == "regular"]) >= 2, 60, "two checkpoints")
    assert a.stop(signal.SIGTERM) == 0
    newest = next(r for r in checkpoints(sqlite_url, task_id) if r["type"] == "emergency")
    path = a.data_dir / newest["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    a2 = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        wait_for(lambda: any(m.startswith("resuming from regular") for m in task_logs(sqlite_url, task_id)), 60,
                 "a resume from the previous regular checkpoint")
        assert "does not match its sha256" in a2.log()
        assert any("refused" in m and newest["path"] in m for m in task_logs(sqlite_url, task_id))
    finally:
        a2.stop()


async def _record_sha256(url: str, row_id: int, sha256: str) -> None:
    """Give a checkpoints row another sha256 (as if its file had been written with that content)."""
    from sqlalchemy import select, update

    from app.db.engine import create_database
    from app.db.schema import checkpoints as checkpoints_table

    db = create_database(url)
    try:
        async with db.begin() as conn:
            metrics = (await conn.execute(select(checkpoints_table.c.metrics)
                                          .where(checkpoints_table.c.id == row_id))).scalar_one()
            await conn.execute(update(checkpoints_table).where(checkpoints_table.c.id == row_id)
                               .values(metrics={**metrics, "sha256": sha256}))
    finally:
        await db.dispose()


@pytest.mark.parametrize("damage", ["truncated", "wrong keys"])
async def test_checkpoint_matching_its_sha256_but_unloadable_is_passed_over(tmp_path: Path, sqlite_url: str,
                                                                           damage: str) -> None:
    """The newest checkpoint's file is a truncated zip or torch data of another shape, recorded with its own sha256:
    the agent says it cannot be resumed from (naming it), resumes from the previous one and trains on."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    task_id = submit(tmp_path, sqlite_url, mlp_task("unloadable", epochs=200, samples=4000, checkpoint="30 steps"))
    wait_for(lambda: len([r for r in checkpoints(sqlite_url, task_id) if r["type"] == "regular"]) >= 2, 60, "two checkpoints")
    assert a.stop(signal.SIGTERM) == 0
    newest = next(r for r in checkpoints(sqlite_url, task_id) if r["type"] == "emergency")
    path = a.data_dir / newest["path"]
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(4), "step": newest["metrics"]["step"]}, path)
    await _record_sha256(sqlite_url, newest["id"], sha256_file(path))
    a2 = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        resumed = wait_for(lambda: [m for m in task_logs(sqlite_url, task_id) if m.startswith("resuming from")], 90,
                           "a resume")
        assert resumed[0].startswith("resuming from regular"), resumed
        step = int(resumed[0].split("at step ")[1].split()[0])
        assert step < newest["metrics"]["step"]
        wait_for(lambda: any(r["type"] == "regular" and r["metrics"]["step"] > newest["metrics"]["step"]
                             for r in checkpoints(sqlite_url, task_id)), 90, "training on past the passed-over step")
        logs = task_logs(sqlite_url, task_id)
        assert not any(m.startswith("resuming from emergency") for m in logs), logs
        passed_over = [m for m in logs if newest["path"] in m and "trying the previous one" in m]
        assert len(passed_over) == 1, logs
        assert ("cannot be loaded" if damage == "truncated" else "lacks model") in passed_over[0]
        assert "Traceback" not in a2.log()
        assert task(sqlite_url, task_id)["status"] == "running"
        assert (run_state(sqlite_url, task_id) or {})["failures"] == 0
    finally:
        a2.stop()


async def test_killed_coordinator_is_replaced_and_fenced(tmp_path: Path, sqlite_url: str) -> None:
    """kill -9 rank 0's agent: the survivors re-elect one coordinator with a higher generation and finish."""
    from app.db.engine import create_database
    from app.db.queries import claims as claim_queries
    from app.errors import Fenced

    await upgraded(sqlite_url)
    env = {"AIFARM_FAILURE_TIMEOUT": "3s"}
    agents = [AgentProcess(tmp_path, name, "--database-url", sqlite_url, *FAST, env=env) for name in ("a", "b", "c")]
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("reelect", n_clients=2, epochs=30, samples=4000, checkpoint="40 steps"))
        wait_for(lambda: any(r["type"] == "regular" for r in checkpoints(sqlite_url, task_id)), 90, "the first checkpoint")
        first = run_state(sqlite_url, task_id)
        old = next(x for x in agents if x.client_id == first["coordinator_id"])
        old.kill()
        wait_for(lambda: (run_state(sqlite_url, task_id) or {}).get("coordinator_id") not in (None, old.client_id)
                 and task(sqlite_url, task_id)["status"] == "running", 60, "a new coordinator")
        second = run_state(sqlite_url, task_id)
        assert second["generation"] > first["generation"]
        db = create_database(sqlite_url)
        try:
            async with db.begin() as conn:
                with pytest.raises(Fenced):
                    await claim_queries.update_task_fenced(conn, task_id, first["generation"], old.client_id,
                                                           {"result": {"progress": 1}})
        finally:
            await db.dispose()
        wait_for(lambda: _done(sqlite_url, task_id), 180, "the task to finish after re-election")
        assert task(sqlite_url, task_id)["status"] == "completed"
        assert any("resuming from" in m for m in task_logs(sqlite_url, task_id))
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()


async def test_config_the_recipe_rejects_ends_as_error_at_once(tmp_path: Path, sqlite_url: str) -> None:
    """A cnn given three conv blocks (it has two): status error after one attempt, with the reason logged."""
    await upgraded(sqlite_url)
    spec = {"type": "training", "requirements": {}, "priority": 0, "config": {
        "name": "badcnn", "model": "cnn", "dataset": "synthetic", "batch_size": 16, "learning_rate": 0.01,
        "epochs": 1, "distributed": False, "n_clients": 1, "model_options": {"channels": [4, 8, 16]},
        "dataset_options": {"kind": "image", "samples": 64}}}
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    try:
        task_id = submit(tmp_path, sqlite_url, spec)
        wait_for(lambda: _done(sqlite_url, task_id), 60, "the task to end")
        row = task(sqlite_url, task_id)
        assert row["status"] == "error"
        assert "RecipeError" in row["error_log"] and "channels" in row["error_log"]
        assert (run_state(sqlite_url, task_id) or {})["failures"] == 1
    finally:
        a.stop()
