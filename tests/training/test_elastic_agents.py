"""Elastic groups on real agents: a killed member leaves and the rest go on in the same processes, a newcomer joins,
a paused member leaves and comes back, and a group below min_clients goes back to the queue with its newest state."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.db.queries import assignments as assignment_queries
from tests.agent.harness import AgentProcess, wait_for
from tests.agent.test_pause import aifarm
from tests.training.e2e import applied_samples, checkpoints, mlp_task, read, run_state, submit, sync, task, task_logs, upgraded, worker_pids

FAST = ("--heartbeat-interval", "1s")
FAILURE_TIMEOUT = 3.0
pytestmark = pytest.mark.slow


def _members(url: str, task_id: int) -> dict[str, int]:
    """client id → rank of the task's current assignments."""
    return {r["client_id"]: r["rank"] for r in sync(read(url, assignment_queries.list_for_task, task_id))}


def _step(url: str, task_id: int) -> int:
    return int((task(url, task_id)["result"] or {}).get("step", 0))


def _elastic_task(name: str, **config: Any) -> dict[str, Any]:
    settings = {"epochs": 50, **config}
    return mlp_task(name, n_clients=3, min_clients=2, samples=16000, checkpoint="200 steps", **settings)


class StepWatch:
    """Reads tasks.result.step every 0.2 s in a thread: the steps seen, in order."""

    def __init__(self, url: str, task_id: int) -> None:
        self.url, self.task_id, self.steps, self._done = url, task_id, [0], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            try:
                self.steps.append(_step(self.url, self.task_id))
            except Exception:  # noqa: BLE001 - a read during a write on SQLite: the next one counts
                continue

    def stop(self) -> list[int]:
        """Stop watching; the steps seen."""
        self._done.set()
        self._thread.join()
        return self.steps


def _waited(predicate: Any, timeout: float, what: str, url: str, task_id: int, *watched: AgentProcess) -> Any:
    """wait_for, and on a time-out the group's members, the task's newest log lines and the watched agents' logs."""
    try:
        return wait_for(predicate, timeout, what)
    except AssertionError as exc:
        logs = "\n".join(task_logs(url, task_id)[-30:])
        agents = "\n".join(f"--- agent {a.client_id}:\n{a.log()[-4000:]}" for a in watched)
        raise AssertionError(f"{exc}\nmembers: {_members(url, task_id)}\ntask log:\n{logs}\n{agents}") from None


def _training(agents: list[AgentProcess]) -> dict[str, list[int]]:
    return {a.client_id: worker_pids(a.proc.pid) for a in agents}


async def test_a_killed_member_leaves_the_rest_go_on_and_a_newcomer_joins(tmp_path: Path, sqlite_url: str) -> None:
    """kill -9 of one member's agent mid-epoch: the two others train again in the same worker processes within
    failure_timeout + a few seconds, tasks.result.step never goes back, no sample is trained twice; a fourth agent
    then joins without a restart of the others, and the task completes."""
    await upgraded(sqlite_url)
    samples = tmp_path / "samples"
    samples.mkdir()
    # The debug sample log is written outside the worker's folders: this test runs built-in recipes unconfined.
    env = {"AIFARM_FAILURE_TIMEOUT": f"{FAILURE_TIMEOUT:.0f}s", "AIFARM_ELASTIC_SETTLE": "1s",
           "AIFARM_DEBUG_SAMPLE_LOG": str(samples), "AIFARM_SANDBOX_BUILTIN": "false"}
    agents = [AgentProcess(tmp_path, name, "--database-url", sqlite_url, *FAST, env=env) for name in ("a", "b", "c")]
    newcomer: AgentProcess | None = None
    try:
        task_id = submit(tmp_path, sqlite_url, _elastic_task("cut", epochs=150))
        wait_for(lambda: len(_members(sqlite_url, task_id)) == 3 and all(_training(agents).values())
                 and _step(sqlite_url, task_id) > 20, 120, "three members training")
        pids = _training(agents)
        generation = run_state(sqlite_url, task_id)["generation"]
        victim = next(a for a in agents if _members(sqlite_url, task_id)[a.client_id] == 0)  # rank 0: the hardest case
        survivors = [a for a in agents if a is not victim]
        watch = StepWatch(sqlite_url, task_id)
        victim.kill()
        killed = time.monotonic()
        wait_for(lambda: any(f"generation {generation + 1}" in m and "training again" in m
                             for m in task_logs(sqlite_url, task_id)), 60, "the survivors to train again")
        again = time.monotonic() - killed
        before = _step(sqlite_url, task_id)
        wait_for(lambda: _step(sqlite_url, task_id) > before + 20, 60, "progress after the departure")
        assert sorted(_members(sqlite_url, task_id).values()) == [0, 1]
        assert _training(survivors) == {a.client_id: pids[a.client_id] for a in survivors}
        # The group never waited for gloo's own timeout (30 s or more): the database said the member was gone.
        assert again < FAILURE_TIMEOUT + 15, again

        newcomer = AgentProcess(tmp_path, "d", "--database-url", sqlite_url, *FAST, env=env)
        _waited(lambda: len(_members(sqlite_url, task_id)) == 3 and bool(worker_pids(newcomer.proc.pid)), 60,
                "the newcomer to join", sqlite_url, task_id, newcomer)
        _waited(lambda: any("as 3 member(s)" in m for m in task_logs(sqlite_url, task_id)), 60,
                "the group of three to train", sqlite_url, task_id, newcomer, *survivors)
        assert _training(survivors) == {a.client_id: pids[a.client_id] for a in survivors}
        wait_for(lambda: task(sqlite_url, task_id)["status"] in ("completed", "failed", "error"), 240, "the end")
        steps = watch.stop()
        final = task(sqlite_url, task_id)
        assert final["status"] == "completed", final["error_log"]
    finally:
        for agent in [*agents, *([newcomer] if newcomer else [])]:
            if agent.proc.poll() is None:
                agent.stop()
    assert steps == sorted(steps), steps
    counts, applied = applied_samples(samples)
    assert applied == list(range(1, int(final["result"]["step"]) + 1))  # every step once, none skipped
    assert counts and max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:10]
    assert len(counts) == len(applied) * 32 * 3  # each step's whole global batch
    contributions = final["result"]["elastic"]["contributions"]
    assert sum(contributions.values()) == len(counts)  # per machine, including the one that left and the newcomer
    assert {victim.client_id, newcomer.client_id} <= set(contributions) and min(contributions.values()) > 0


async def test_pause_shrinks_the_group_and_resume_grows_it_back(tmp_path: Path, sqlite_url: str) -> None:
    """`aifarm pause` on one member of three: the two others go on in the same processes; `aifarm resume` brings
    it back as the third member."""
    await upgraded(sqlite_url)
    env = {"AIFARM_FAILURE_TIMEOUT": f"{FAILURE_TIMEOUT:.0f}s", "AIFARM_ELASTIC_SETTLE": "1s"}
    agents = [AgentProcess(tmp_path, name, "--database-url", sqlite_url, *FAST, env=env) for name in ("a", "b", "c")]
    try:
        task_id = submit(tmp_path, sqlite_url, _elastic_task("pause"))
        wait_for(lambda: len(_members(sqlite_url, task_id)) == 3 and all(_training(agents).values())
                 and _step(sqlite_url, task_id) > 20, 120, "three members training")
        pids = _training(agents)
        leaving = next(a for a in agents if _members(sqlite_url, task_id)[a.client_id] == 1)
        others = [a for a in agents if a is not leaving]
        assert aifarm(tmp_path, leaving, "pause").returncode == 0
        wait_for(lambda: leaving.client_id not in _members(sqlite_url, task_id), 60, "the paused member to leave")
        before = _step(sqlite_url, task_id)
        wait_for(lambda: _step(sqlite_url, task_id) > before + 20, 60, "two members to go on")
        assert task(sqlite_url, task_id)["status"] == "running"
        assert _training(others) == {a.client_id: pids[a.client_id] for a in others}
        assert any(f"membership: {leaving.client_id} left" in m for m in task_logs(sqlite_url, task_id))
        assert aifarm(tmp_path, leaving, "resume").returncode == 0
        wait_for(lambda: leaving.client_id in _members(sqlite_url, task_id) and bool(worker_pids(leaving.proc.pid)),
                 60, "the member to come back")
        assert _training(others) == {a.client_id: pids[a.client_id] for a in others}
        assert any(f"membership: {leaving.client_id} joined" in m for m in task_logs(sqlite_url, task_id))
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()


async def test_below_min_clients_the_task_waits_with_its_newest_state(tmp_path: Path, sqlite_url: str) -> None:
    """Two of three members (min_clients 2) form after the settle time; when one is killed the task is pending again
    with the survivor's emergency checkpoint, and it resumes from it when another machine comes."""
    await upgraded(sqlite_url)
    env = {"AIFARM_FAILURE_TIMEOUT": f"{FAILURE_TIMEOUT:.0f}s", "AIFARM_ELASTIC_SETTLE": "1s"}
    agents = [AgentProcess(tmp_path, name, "--database-url", sqlite_url, *FAST, env=env) for name in ("a", "b")]
    try:
        task_id = submit(tmp_path, sqlite_url, _elastic_task("few"))
        wait_for(lambda: len(_members(sqlite_url, task_id)) == 2 and all(_training(agents).values())
                 and _step(sqlite_url, task_id) > 20, 120, "two members training")
        agents[1].kill()
        wait_for(lambda: task(sqlite_url, task_id)["status"] == "pending", 60, "the task to wait again")
        wait_for(lambda: any(c["type"] == "emergency" for c in checkpoints(sqlite_url, task_id)), 30,
                 "the survivor's emergency checkpoint")
        saved = max(int(c["metrics"]["step"]) for c in checkpoints(sqlite_url, task_id) if c["type"] == "emergency")
        agents.append(AgentProcess(tmp_path, "c", "--database-url", sqlite_url, *FAST, env=env))
        wait_for(lambda: task(sqlite_url, task_id)["status"] == "running" and _step(sqlite_url, task_id) > saved, 90,
                 "the task to resume")
        assert any("resuming from emergency checkpoint" in m for m in task_logs(sqlite_url, task_id))
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()
