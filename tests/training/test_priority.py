"""Training workers run below the volunteer's own work: nice 19 and idle I/O, every thread of them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from tests.agent.harness import AgentProcess, wait_for
from tests.training.e2e import (
    autogroup_of,
    foreground,
    mlp_task,
    pin_threads,
    quietest_cpu,
    renice_threads,
    submit,
    task,
    upgraded,
    worker_pids,
)

AUTOGROUP_ON = Path("/proc/sys/kernel/sched_autogroup_enabled").exists() and \
    Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _thread_nices(pid: int) -> list[int]:
    """The nice value of every thread of a process (field 19 of /proc/PID/task/TID/stat)."""
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that just ended
        values.append(int(fields[16]))
    return values


async def test_training_worker_runs_at_idle_cpu_and_io_priority(tmp_path: Path, sqlite_url: str) -> None:
    """A worker training a task is at nice 19 with idle I/O in all its threads; the agent itself is not lowered."""
    await upgraded(sqlite_url)
    agent = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, "--heartbeat-interval", "1s")
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("niced", epochs=200, samples=4000, checkpoint="100000 steps"))
        wait_for(lambda: task(sqlite_url, task_id)["status"] == "running" and worker_pids(agent.proc.pid), 60,
                 "training to start")
        wait_for(lambda: (task(sqlite_url, task_id)["result"] or {}).get("step", 0) > 0, 60, "a training step")
        (pid,) = worker_pids(agent.proc.pid)
        worker = psutil.Process(pid)
        assert worker.nice() == 19
        assert worker.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
        nices = _thread_nices(pid)
        assert nices and set(nices) == {19}, nices
        assert psutil.Process(agent.proc.pid).nice() == psutil.Process().nice()
        # A session (and so an autogroup) of its own, at nice 19: the desktop's session is not shared fairly with it.
        assert os.getsid(pid) == pid and os.getsid(agent.proc.pid) != pid
        group, agent_group = autogroup_of(pid), autogroup_of(agent.proc.pid)
        if group is not None and agent_group is not None and AUTOGROUP_ON:
            assert group[1] == 19 and group[0] != agent_group[0], (group, agent_group)
    finally:
        agent.stop()
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30,
             "the worker to stop with its agent")


@pytest.mark.timeout(60)
async def test_foreground_keeps_the_cpu_it_shares_with_a_training_worker(tmp_path: Path, sqlite_url: str) -> None:
    """On one CPU shared with a training worker, a busy foreground program gets nearly all of it; at nice 0, half."""
    await upgraded(sqlite_url)
    agent = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, "--heartbeat-interval", "1s")
    try:
        task_id = submit(tmp_path, sqlite_url, mlp_task("shared", epochs=500, samples=4000, checkpoint="100000 steps"))
        wait_for(lambda: task(sqlite_url, task_id)["status"] == "running" and worker_pids(agent.proc.pid), 40,
                 "training to start")
        wait_for(lambda: (task(sqlite_url, task_id)["result"] or {}).get("step", 0) > 0, 15, "a training step")
        (pid,) = worker_pids(agent.proc.pid)
        cpu = quietest_cpu()
        pin_threads(pid, cpu)
        # CPU time, not speed: the foreground's share of what it and the worker got on that CPU in the same window.
        lowered = foreground(3.0, cpu, pid)
        # The volunteer's desktop runs in another session than the agent's: the worker must yield to it as well.
        other_session = foreground(3.0, cpu, pid, new_session=True)
        renice_threads(pid, 0)
        control = foreground(3.0, cpu, pid)
        assert task(sqlite_url, task_id)["status"] == "running"
        assert control.other_cpu > 0.5, \
            f"the worker did not compete at nice 0: {control}, threads {_thread_nices(pid)}, autogroup {autogroup_of(pid)}"
        assert lowered.pair_share >= 0.8, f"worker as started: {lowered}, nice 0: {control}"
        assert other_session.pair_share >= 0.8, f"from another session: {other_session}, nice 0: {control}"
        assert control.pair_share <= 0.7, f"worker as started: {lowered}, nice 0: {control}"
    finally:
        agent.stop()
