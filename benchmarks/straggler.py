"""A straggler: one of three members held to a tenth of a core (a cgroup v1 CPU quota). The farm's samples/s divided
by the sum of each member's solo samples/s, elastic and lockstep (DDP) in the same run, workers driven as their agents
drive them."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Figure
from tests.training.e2e import WorkerProcess, worker_spec

CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
QUOTA = 0.1  # of one core
BATCH = 32


def _config(steps: int) -> dict[str, Any]:
    return {"name": "straggler", "model": "mlp", "dataset": "synthetic", "batch_size": BATCH, "learning_rate": 0.01,
            "epochs": 100, "max_steps": steps, "seed": 1, "model_options": {"hidden": [256, 128], "dropout": 0.0},
            "dataset_options": {"kind": "vector", "samples": 20000, "features": 64, "classes": 10, "noise": 2.0}}


class Quota:
    """A CPU cgroup holding processes to a fraction of one core."""

    def __init__(self, fraction: float) -> None:
        self.path = CPU_CGROUP / f"aifarm-bench-{os.getpid()}"
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text("100000")
        (self.path / "cpu.cfs_quota_us").write_text(str(int(100000 * fraction)))

    def hold(self, pid: int) -> None:
        """Put a process (all its threads) under the quota."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Delete the cgroup (its processes have ended)."""
        self.path.rmdir()


def _spec(root: Path, steps: int, rank: int, world: int, elastic: bool, **extra: Any) -> dict[str, Any]:
    spec = worker_spec(root, _config(steps))
    spec.update(rank=rank, world_size=world, progress_interval=1.0, **extra)
    if elastic:
        spec.update(elastic=True, max_clients=world, min_clients=max(1, world - 1))
    return spec


def _is(kind: str) -> Any:
    return lambda m: m.type == kind


def _rate(tmp: Path, steps: int, world: int, elastic: bool, slow: set[int], quota: Quota) -> float:
    """Global samples per second of a group of `world` workers (ranks in `slow` under the quota) over `steps` steps;
    an elastic member that releases itself leaves and the others go on, as their agents would have them."""
    first = WorkerProcess(_spec(tmp / "r0", steps, 0, world, elastic))
    workers = [first]
    try:
        if 0 in slow:
            quota.hold(first.proc.pid)
        if world > 1:
            rendezvous = first.wait_for(_is("rendezvous"), 120)
            for rank in range(1, world):
                worker = WorkerProcess(_spec(tmp / f"r{rank}", steps, rank, world, elastic,
                                             rendezvous={"host": "127.0.0.1", "port": rendezvous.port}))
                if rank in slow:
                    quota.hold(worker.proc.pid)
                workers.append(worker)
        started = first.wait_for(_is("started"), 300)
        begin, start_step = time.monotonic(), started.step
        done = _finish(workers, elastic)
        elapsed = time.monotonic() - begin
        return (done.step - start_step) * BATCH * world / elapsed
    finally:
        for worker in workers:
            worker.close()


def _finish(workers: list[WorkerProcess], elastic: bool) -> Any:
    """Wait for rank 0's Finished; when an elastic member released itself, order the others into the next
    generation as their agents would."""
    generation = 1
    while True:
        message = workers[0].wait_for(lambda m: m.type in ("finished", "broken"), 600)
        if message.type == "finished":
            return message
        workers[:] = _alive(workers)
        generation += 1
        for rank, worker in enumerate(workers):
            worker.send({"cmd": "regroup", "generation": generation, "rank": rank, "world": len(workers)})
        if len(workers) > 1:
            rendezvous = workers[0].wait_for(_is("rendezvous"), 120)
            for worker in workers[1:]:
                worker.send({"cmd": "rendezvous", "generation": generation, "host": "127.0.0.1",
                             "port": rendezvous.port})


def _alive(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    """The members still running once the one that left has exited (a released member exits within seconds)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and all(w.proc.poll() is None for w in workers):
        time.sleep(0.1)
    return [w for w in workers if w.proc.poll() is None]


def straggler(quick: bool = False) -> list[Figure]:
    """Elastic and lockstep farm ÷ the sum of solo speeds, one member of three at a tenth of a core."""
    if not (CPU_CGROUP / "cgroup.procs").exists() or not os.access(CPU_CGROUP, os.W_OK):
        return [Figure("elastic: straggler at 0.1 core, farm ÷ sum of solo", 0.0, "×", "≥ 0.85", False,
                       "not measured: needs a writable cgroup v1 cpu controller (root)")]
    steps = 60 if quick else 2000
    tmp = Path(tempfile.mkdtemp(prefix="aifarm-bench-straggler-"))
    quota = Quota(QUOTA)
    try:
        solo = [_rate(tmp / f"solo{i}", steps // (10 if i == 2 else 1), 1, True, {0} if i == 2 else set(), quota)
                for i in range(3)]
        elastic = _rate(tmp / "elastic", steps, 3, True, {2}, quota)
        lockstep = _rate(tmp / "lockstep", steps, 3, False, {2}, quota)
    finally:
        quota.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(solo)
    detail = (f"solo {solo[0]:,.0f} + {solo[1]:,.0f} + {solo[2]:,.0f} (0.1 core) samples/s; elastic farm "
              f"{elastic:,.0f}, lockstep (DDP) farm {lockstep:,.0f} samples/s; mlp 64-256-128-10, batch {BATCH} per "
              f"member, {steps} steps, 3 workers on this 2-core machine")
    return [Figure("elastic: straggler at 0.1 core, farm ÷ sum of solo", elastic / total, "×", "≥ 0.85",
                   elastic / total >= 0.85, detail),
            Figure("lockstep: straggler at 0.1 core, farm ÷ sum of solo", lockstep / total, "×", "(baseline)", True,
                   "the same run, DDP as before elastic groups")]
