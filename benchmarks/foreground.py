"""Figure 9: the volunteer's own CPU-bound work on the CPU a training worker uses, against the same work alone."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

from benchmarks.common import Agent, Figure
from benchmarks.training import _curve, _farm, _submit, _task, _wait
from tests.training.e2e import Foreground, foreground, pin_threads, quietest_cpu, renice_threads, task, worker_pids


def _shares(runs: list[Foreground]) -> str:
    return (f"{statistics.median(r.wall_share for r in runs):.1%} of the window, "
            f"{statistics.median(r.pair_share for r in runs):.1%} of the CPU time it and the worker got")


def measure(quick: bool = False) -> list[Figure]:
    """A pinned pure-Python busy loop alone, then beside a worker training on the same CPU at its own priority,
    in another session (autogroup), and reset to nice 0; windows alternate so that other load hits them alike."""
    seconds, rounds = (3.0, 1) if quick else (5.0, 5)
    solo: list[Foreground] = []
    lowered: list[Foreground] = []
    session: list[Foreground] = []
    reset: list[Foreground] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url, _ = _farm(tmp)
        agent = Agent(tmp, "a", "--database-url", url, "--heartbeat-interval", "2s")
        try:
            task_id = _submit(tmp, url, _task("foreground", epochs=2000, n_clients=1, checkpoint="100000 steps"))
            _wait(lambda: len(_curve(url, task_id)) > 2, 300)
            (pid,) = worker_pids(agent.proc.pid)
            cpu = quietest_cpu()
            pin_threads(pid, cpu)
            for _ in range(rounds):
                renice_threads(pid, 19)
                lowered.append(foreground(seconds, cpu, pid))
                session.append(foreground(seconds, cpu, pid, new_session=True))
                renice_threads(pid, 0)
                reset.append(foreground(seconds, cpu, pid))
                renice_threads(pid, 19)
                # Alone: the worker stopped for the window, so that solo and shared windows interleave.
                worker = psutil.Process(pid)
                worker.send_signal(signal.SIGSTOP)
                try:
                    solo.append(foreground(seconds, cpu))
                finally:
                    worker.send_signal(signal.SIGCONT)
            status = task(url, task_id)["status"]
            load = os.getloadavg()[0]
        finally:
            agent.stop()
    base = statistics.median(r.rate for r in solo)

    def ratio(runs: list[Foreground]) -> float:
        """Median over rounds of each window's rate ÷ the same round's solo rate (other load drifts slowly)."""
        return statistics.median(r.rate / alone.rate for r, alone in zip(runs, solo, strict=True))

    where = (f"{rounds} x {seconds:.0f}-s windows per case, medians of each round's ratio to its solo window, "
             f"loop and worker pinned to CPU {cpu}; "
             f"alone {base / 1e6:,.1f} M iterations/s ({_shares(solo)}, the worker stopped by SIGSTOP); "
             f"load average {load:.1f} on {psutil.cpu_count()} CPUs: other programs share the CPU in every window")
    return [
        Figure("foreground: busy loop beside a training worker on its CPU ÷ alone (worker as started, nice 19)",
               ratio(lowered), "×", ">= 0.90", ratio(lowered) >= 0.90,
               f"{_shares(lowered)}; same session as the agent; {where}; task {status}"),
        Figure("foreground: the same, the loop in a session of its own (autogroup)", ratio(session), "×",
               ">= 0.90", ratio(session) >= 0.90, f"{_shares(session)}; as a program started from another "
               "terminal or desktop session; Linux schedules each session's group as a whole "
               f"(kernel.sched_autogroup_enabled={_autogroup()})"),
        Figure("foreground: the same, the worker's threads reset to nice 0 (baseline)", ratio(reset), "×",
               "reported", True, f"{_shares(reset)}; same session"),
    ]


def _autogroup() -> str:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "absent"


if __name__ == "__main__":
    for figure in measure("--quick" in sys.argv):
        print(figure.row(), flush=True)
