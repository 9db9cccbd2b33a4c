"""Published datasets in a worker: larger than its memory limit, read memory-mapped; images and CSV shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.datasets.publish import build
from app.training.messages import Finished, decode
from tests.training.e2e import run_worker, worker_spec

CGROUPS = Path("/sys/fs/cgroup/memory")
LIMIT = 450 << 20
RAW_BYTES = 320 << 20  # 640 MB of uint16 tokens with the byte tokenizer
pytestmark = pytest.mark.slow


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A cgroup (v1 memory controller) limited to LIMIT bytes; removed afterwards."""
    group = CGROUPS / f"aifarm-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(LIMIT))
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup here: {exc.strerror}")
    try:
        yield group
    finally:
        try:
            group.rmdir()
        except OSError:
            pass


def test_dataset_larger_than_the_memory_limit_trains(tmp_path: Path, memory_cgroup: Path) -> None:
    """640 MB of tokens, a worker limited to 450 MB (page cache included): it trains and finishes."""
    source = tmp_path / "corpus.txt"
    printable = bytes(32 + i % 95 for i in range(256))  # ASCII text: valid UTF-8
    with source.open("wb") as handle:
        for _ in range(RAW_BYTES >> 20):
            handle.write(os.urandom(1 << 20).translate(printable))
    folder = tmp_path / "data" / "datasets" / "published" / "big" / "1"
    built = build(source, folder, shard_bytes=64 << 20)
    source.unlink()
    manifest = built.manifest("big", 1)
    (folder / "manifest.json").write_text(json.dumps(manifest.to_json()))
    assert manifest.total_bytes > LIMIT * 1.3
    config = {"name": "big", "model": "char_lstm", "dataset": "published", "batch_size": 16, "learning_rate": 0.01,
              "epochs": 1, "max_steps": 20, "distributed": False, "n_clients": 1, "validation_split": 0.01,
              "model_options": {"embedding": 8, "hidden": 16},
              "dataset_options": {"name": "big", "seq_len": 64, "max_validation_samples": 64}}
    spec = {**worker_spec(tmp_path, config), "published_dataset": str(folder)}
    procs = str(memory_cgroup / "cgroup.procs")

    def join_cgroup() -> None:
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))

    proc = subprocess.Popen([sys.executable, "-m", "app.training.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=join_cgroup,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    killer = threading.Timer(300, proc.kill)
    killer.start()
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        proc.stdin.flush()  # stdin stays open: its end would tell the worker to stop
        out = proc.stdout.read()
        err = proc.stderr.read()
    finally:
        killer.cancel()
        proc.stdin.close()
        proc.wait()
    messages = [decode(line) for line in out.splitlines()]
    peak = int((memory_cgroup / "memory.max_usage_in_bytes").read_text())
    assert any(isinstance(m, Finished) for m in messages), (proc.returncode, messages[-3:], err[-2000:])
    assert peak <= LIMIT < manifest.total_bytes


@pytest.mark.parametrize("kind", ["images", "csv"])
def test_published_images_and_csv_train_in_a_worker(tmp_path: Path, kind: str) -> None:
    """Image .npy shard pairs and CSV shards, built by publish, are read by the worker and a model learns them."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(600) % 4
    if kind == "images":
        images = (rng.random((600, 12, 12)) * 30 + labels[:, None, None] * 60).astype(np.uint8)
        source = tmp_path / "shapes.npz"
        np.savez(source, images=images, labels=labels)
    else:
        source = tmp_path / "table.csv"
        rows = [f"{x:.3f},{y:.3f},{label}" for x, y, label in
                zip(rng.normal(labels * 3.0), rng.normal(-labels * 3.0), labels, strict=True)]
        source.write_text("x,y,label\n" + "\n".join(rows) + "\n")
    folder = tmp_path / "data" / "datasets" / "published" / kind / "1"
    built = build(source, folder, shard_bytes=4 << 10)
    manifest = built.manifest(kind, 1)
    assert len(manifest.data_shards) > 1
    (folder / "manifest.json").write_text(json.dumps(manifest.to_json()))
    config = {"name": kind, "model": "mlp", "dataset": "published", "batch_size": 32, "learning_rate": 0.01,
              "epochs": 10, "distributed": False, "n_clients": 1, "validation_split": 0.2,
              "dataset_options": {"name": kind}}
    spec = {**worker_spec(tmp_path, config), "published_dataset": str(folder)}
    messages = run_worker(spec, env={"OMP_NUM_THREADS": "1"})
    finished = [m for m in messages if isinstance(m, Finished)]
    assert finished, messages[-3:]
    assert finished[0].metrics["val_accuracy"] >= 0.9
