"""Elastic training: time to train again after a member is killed, a newcomer's time to its first contributed step
(real agents), and a straggler held to a tenth of a core (workers driven as their agents drive them)."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Agent, Figure
from benchmarks.training import _farm, _submit, _wait
from tests.training.e2e import read, run_state, sync, task, task_logs

FAILURE_TIMEOUT = 3.0
AGAIN = re.compile(r"training again at step (\d+) as (\d+) member\(s\) \(generation (\d+)")


def _task(epochs: int) -> dict[str, Any]:
    return {"type": "training", "requirements": {}, "priority": 0, "config": {
        "name": "elastic", "model": "mlp", "dataset": "synthetic", "batch_size": 32, "learning_rate": 0.01,
        "epochs": epochs, "distributed": True, "n_clients": 3, "min_clients": 2, "checkpoint_interval": "500 steps",
        "dataset_options": {"samples": 16000, "features": 16, "classes": 4, "noise": 2.0}}}


def _members(url: str, task_id: int) -> dict[str, dict[str, Any]]:
    from app.db.queries import assignments

    return {r["client_id"]: r for r in sync(read(url, assignments.list_for_task, task_id))}


def _step(url: str, task_id: int) -> int:
    return int((task(url, task_id)["result"] or {}).get("step", 0))


def kill_and_join(quick: bool = False) -> list[Figure]:
    """Three agents train; rank 0's agent is killed: seconds until the two others train again and steps they lost;
    then a fourth agent starts: seconds from its start to its first contributed step."""
    tmp = Path(tempfile.mkdtemp(prefix="aifarm-bench-elastic-"))
    env = {"AIFARM_FAILURE_TIMEOUT": f"{FAILURE_TIMEOUT:.0f}s", "AIFARM_ELASTIC_SETTLE": "1s"}
    agents: list[Agent] = []
    try:
        url, _ = _farm(tmp)
        agents += [Agent(tmp, name, "--database-url", url, "--heartbeat-interval", "1s", env=env) for name in "abc"]
        task_id = _submit(tmp, url, _task(40 if quick else 200))
        _wait(lambda: len(_members(url, task_id)) == 3 and _step(url, task_id) > 100, 180)
        generation = run_state(url, task_id)["generation"]
        victim = next(a for a in agents if _members(url, task_id)[a.client_id]["rank"] == 0)
        last_step = _step(url, task_id)
        victim.proc.kill()
        killed = time.monotonic()
        seen: list[tuple[int, int]] = []

        def again() -> bool:
            for line in task_logs(url, task_id):
                match = AGAIN.search(line)
                if match and int(match.group(3)) > generation:
                    seen.append((int(match.group(1)), int(match.group(3))))
                    return True
            last = _step(url, task_id)
            nonlocal last_step
            last_step = max(last_step, last) if not seen else last_step
            return False

        _wait(again, 120)
        recovered = time.monotonic() - killed
        lost = max(0, last_step - seen[0][0])
        newcomer = Agent(tmp, "d", "--database-url", url, "--heartbeat-interval", "1s", env=env)
        agents.append(newcomer)
        _wait(lambda: float((_members(url, task_id).get(newcomer.client_id, {}).get("metrics") or {})
                            .get("contributed_samples") or 0) > 0, 180)
        joined = time.monotonic() - newcomer.started
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    bound = FAILURE_TIMEOUT + 2
    return [
        Figure("elastic: a member killed to the others training again", recovered, "s", f"≤ {bound:.0f} s "
               "(failure_timeout + 2 s)", recovered <= bound,
               f"3 agents on one machine, failure_timeout {FAILURE_TIMEOUT:.0f} s, heartbeat 1 s; same worker "
               f"processes; {lost} steps lost by the survivors"),
        Figure("elastic: a newcomer's start to its first contributed step", joined, "s", "≤ 30 s", joined <= 30,
               "agent start, claim of the running group, worker start, state from rank 0, first applied step"),
    ]


def measure(quick: bool = False) -> list[Figure]:
    """The elastic figures."""
    from benchmarks.straggler import straggler

    return [*kill_and_join(quick), *straggler(quick)]
