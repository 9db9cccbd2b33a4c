"""Helpers for end-to-end training tests: tasks, database reads, worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import checkpoints as checkpoint_queries
from app.db.queries import claims as claim_queries
from app.db.queries import dataset_hosts as dataset_host_queries
from app.db.queries import logs as log_queries
from app.db.queries import tasks as task_queries
from app.training.messages import Failed, WorkerMessage, decode
from tests.agent.harness import agent_env


def mlp_task(name: str = "demo", *, n_clients: int = 1, epochs: int = 3, samples: int = 4000,
             checkpoint: str = "20 steps", **config: Any) -> dict[str, Any]:
    """A small deterministic MLP task on synthetic data."""
    return {
        "type": "training",
        "requirements": {"min_cpu_cores": 1},
        "priority": 0,
        "config": {
            "name": name, "model": "mlp", "dataset": "synthetic", "batch_size": 32, "learning_rate": 0.01,
            "epochs": epochs, "distributed": n_clients > 1, "n_clients": n_clients, "checkpoint_interval": checkpoint,
            "dataset_options": {"samples": samples, "features": 16, "classes": 4, "noise": 2.0},
            **config,
        },
    }


async def upgraded(url: str) -> None:
    """Create the schema."""
    db = create_database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def add_dataset_host(url: str, host: str, farm_name: str = "default") -> None:
    """Put a host on a farm's dataset hosts."""
    db = create_database(url)
    try:
        async with db.begin() as conn:
            await dataset_host_queries.add_host(conn, farm_name, host)
    finally:
        await db.dispose()


def submit(tmp_path: Path, url: str, task: dict[str, Any], env: dict[str, str] | None = None) -> int:
    """`aifarm submit` through the real CLI; returns the id."""
    path = tmp_path / f"task-{len(list(tmp_path.glob('task-*.json')))}.json"
    path.write_text(json.dumps(task))
    done = subprocess.run([sys.executable, "-m", "app", "submit", str(path), "--database-url", url],
                          capture_output=True, text=True, env=agent_env(tmp_path, env), timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


async def read(url: str, fn: Any, *args: Any) -> Any:
    """Run one query function on a fresh connection."""
    db = create_database(url)
    try:
        async with db.connect() as conn:
            return await fn(conn, *args)
    finally:
        await db.dispose()


def sync(coro: Any) -> Any:
    """Run a coroutine from synchronous polling code (own thread, own loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def task(url: str, task_id: int) -> dict[str, Any]:
    """The task row, synchronously."""
    return sync(read(url, task_queries.get_task, task_id))


def run_state(url: str, task_id: int) -> dict[str, Any] | None:
    """The task_runs row, synchronously."""
    return sync(read(url, claim_queries.get_run, task_id))


def checkpoints(url: str, task_id: int) -> list[dict[str, Any]]:
    """Checkpoint rows, newest first, synchronously."""
    return sync(read(url, checkpoint_queries.list_for_task, task_id))


def task_logs(url: str, task_id: int) -> list[str]:
    """task_logs messages, oldest first."""
    rows = sync(read(url, lambda conn, t: log_queries.recent_task_logs(conn, t, 1000), task_id))
    return [r["message"] for r in reversed(rows)]


def worker_pids(agent_pid: int) -> list[int]:
    """Training worker processes under an agent."""
    try:
        children = psutil.Process(agent_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in children:
        try:
            command = child.cmdline()
            # a confined worker runs under bwrap, whose own command line names the worker too
            if "app.training.worker" in " ".join(command) and not (command and command[0].endswith("bwrap")):
                pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue  # a worker that just exited
    return pids


def worker_spec(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The spec an agent hands a single-rank worker, with its folders under root and no dataset sources allowed."""
    return {
        "task_id": 1, "generation": 1, "rank": 0, "world_size": 1, "backend": "gloo", "rendezvous": None,
        "config": config, "cache_dir": str(root / "datasets"), "checkpoint_dir": str(root / "checkpoints"),
        "model_dir": str(root / "models"), "resume": None, "resume_rank_state": None, "threads": 1,
        "checkpoint_every": [200, "steps"], "progress_interval": 2.0, "collective_timeout": 30.0,
        "dataset_dirs": [], "dataset_hosts": [],
    }


def run_worker(spec: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 120) -> list[WorkerMessage]:
    """Run `python -m app.training.worker` on a spec until it exits (stdin stays open: no stop); its messages."""
    proc = subprocess.Popen([sys.executable, "-m", "app.training.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    assert proc.stdin is not None and proc.stdout is not None
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        proc.stdin.flush()
        out = proc.stdout.read()
    finally:
        killer.cancel()
        proc.stdin.close()
        proc.wait()
    return [decode(line) for line in out.splitlines()]


# A CPU-bound foreground program: pinned to one CPU, it counts loop iterations for a while and reads, at the same
# two instants, its own CPU time and that of another process (the worker it competes with) from /proc.
FOREGROUND = """
import json, os, sys, time
seconds, cpu, other = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {cpu})
tick = os.sysconf("SC_CLK_TCK")
def other_cpu():
    if not other:
        return 0.0
    try:
        fields = open(f"/proc/{other}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / tick
def own_cpu():
    t = os.times()
    return t.user + t.system
other0, own0, start = other_cpu(), own_cpu(), time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    for _ in range(2000):
        pass
    n += 2000
wall, own, other1 = time.monotonic() - start, own_cpu(), other_cpu()
print(json.dumps({"iterations": n, "wall": wall, "cpu": own - own0, "other_cpu": other1 - other0}))
"""


@dataclass(frozen=True)
class Foreground:
    """What a foreground busy loop got over its window."""

    iterations: int
    wall: float
    cpu: float
    other_cpu: float

    @property
    def rate(self) -> float:
        """Loop iterations per wall-clock second."""
        return self.iterations / self.wall

    @property
    def wall_share(self) -> float:
        """CPU time it got ÷ the window's wall time."""
        return self.cpu / self.wall

    @property
    def pair_share(self) -> float:
        """Its CPU time ÷ its own plus the competing process's, over the same window."""
        return self.cpu / (self.cpu + self.other_cpu)


def foreground(seconds: float, cpu: int, competitor: int = 0, *, new_session: bool = False) -> Foreground:
    """Run the busy loop pinned to `cpu` for `seconds` (in a session of its own if asked) and read what it got."""
    done = subprocess.run([sys.executable, "-c", FOREGROUND, str(seconds), str(cpu), str(competitor)],
                          capture_output=True, text=True, check=True, timeout=seconds + 60,
                          start_new_session=new_session)
    result = json.loads(done.stdout)
    return Foreground(int(result["iterations"]), float(result["wall"]), float(result["cpu"]),
                      float(result["other_cpu"]))


def thread_ids(pid: int) -> list[int]:
    """Every thread of a process (Linux: /proc/PID/task)."""
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def pin_threads(pid: int, cpu: int) -> None:
    """Pin every thread of a process to one CPU (threads it starts later inherit it)."""
    for tid in thread_ids(pid):
        try:
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:
            continue  # a thread that just ended


def renice_threads(pid: int, value: int) -> None:
    """Set the nice value of every thread of a process (on Linux nice is per thread), and of its autogroup when it
    has one of its own (a session apart from ours)."""
    for tid in thread_ids(pid):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, value)
        except ProcessLookupError:
            continue
    # A worker leads a session of its own, so its autogroup is its own: setting it leaves ours alone. Whether our
    # own autogroup reads back says nothing about the worker's (ours reads empty while we are in the default one).
    if os.getsid(pid) == pid and autogroup_of(pid) is not None:
        Path(f"/proc/{pid}/autogroup").write_text(f"{value}\n")


def autogroup_of(pid: int) -> tuple[str, int] | None:
    """A process's autogroup and its nice value (Linux with autogroup scheduling), else None."""
    group = Path(f"/proc/{pid}/autogroup")
    try:
        fields = group.read_text().split()
    except OSError:
        return None
    if len(fields) != 3:
        return None  # empty for the default autogroup (the session init started, never left by a setsid)
    name, _, nice = fields
    return name, int(nice)


def quietest_cpu() -> int:
    """The CPU of this process's allowed set that was least busy over half a second."""
    allowed = sorted(os.sched_getaffinity(0))
    busy = psutil.cpu_percent(interval=0.5, percpu=True)
    return min(allowed, key=lambda cpu: busy[cpu])


def applied_samples(folder: Path) -> tuple[Counter[tuple[int, int]], list[int]]:
    """From the workers' debug sample logs (AIFARM_DEBUG_SAMPLE_LOG): (epoch, sample) → times trained, and the steps
    applied, each step counted once from the newest generation that applied it (a step a departed rank 0 applied
    alone was done again by the next generation)."""
    newest: dict[int, tuple[int, list[int]]] = {}
    for log in folder.glob("*.log"):
        for line in log.read_text().splitlines():
            generation, epoch, step, *indices = (int(v) for v in line.split())
            if step not in newest or newest[step][0] < generation:
                newest[step] = (generation, [epoch, *indices])
    counts: Counter[tuple[int, int]] = Counter()
    for _generation, (epoch, *indices) in newest.values():
        counts.update((epoch, i) for i in indices)
    return counts, sorted(newest)


class WorkerProcess:
    """`python -m app.training.worker` with its messages read in a thread."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "app.training.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        self.messages: queue.Queue[WorkerMessage] = queue.Queue()
        self.seen: list[WorkerMessage] = []
        self.send(spec)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.messages.put(decode(line))

    def send(self, command: dict[str, Any]) -> None:
        """One JSON line on the worker's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def wait_for(self, wanted: Callable[[WorkerMessage], bool], timeout: float = 90) -> WorkerMessage:
        """The first message (from now on, or already seen and not yet matched) that `wanted` accepts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.messages.empty():
                    break
                continue
            self.seen.append(message)
            if wanted(message):
                return message
        failed = [m.error for m in self.seen if isinstance(m, Failed)]
        raise AssertionError(f"no such message from pid {self.proc.pid}; seen: {[m.type for m in self.seen][-20:]}"
                             f"{'; failed: ' + failed[0] if failed else ''}")

    def close(self) -> None:
        """Kill it if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
