"""Elastic groups on SQLite and MariaDB: forming at min_clients after the settle time, admitting newcomers into a
running group, members leaving without ending the attempt, the failure sweep shrinking a group."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from app.config import load_settings
from app.db.engine import Database, create_database
from app.db.migrate import upgrade
from app.db.queries import tasks as task_queries
from app.db.queries.claims import check_fence, publish_rendezvous, update_task_fenced
from app.db.schema import task_assignments, task_logs, tasks
from app.errors import Fenced
from app.scheduling import claiming, service
from app.scheduling.claiming import Formation, Left, admit, form_if_settled, formation_of, leave
from app.scheduling.decide import Capacity
from app.scheduling.failures import FailureSweep
from app.scheduling.scheduler import Joined, Scheduler
from app.training.context import Outcome
from app.training.recorder import RunRecorder
from tests.scheduling.test_claims import (
    add_task,
    claim,
    now_of,
    ranks_of,
    register,
    run_row,
    set_client_columns,
    task_row,
    upgraded,
)
from tests.scheduling.test_fencing import snapshot, sweep_settings

SETTLE = 5.0


async def add_elastic(db: Database, *, n_clients: int = 3, min_clients: int = 2, priority: int = 0,
                      requirements: dict[str, Any] | None = None, **config: Any) -> int:
    """Insert a pending elastic task (n_clients members at most, min_clients at least); returns its id."""
    async with db.begin() as conn:
        return await task_queries.insert_task(
            conn, type="training", requirements=requirements or {}, priority=priority,
            config={"name": f"elastic{n_clients}", "model": "mlp", "dataset": "synthetic", "epochs": 1,
                    "batch_size": 32, "learning_rate": 0.01, "distributed": True, "n_clients": n_clients,
                    "min_clients": min_clients, **config})


async def claims_age(db: Database, task_id: int, seconds: int) -> None:
    """Make every rank of the task look claimed `seconds` ago (by the database's clock)."""
    now = await now_of(db)
    async with db.begin() as conn:
        await conn.execute(update(task_assignments).where(task_assignments.c.task_id == task_id)
                           .values(assigned_at=now - timedelta(seconds=seconds)))


async def settle(db: Database, task_id: int, seconds: float = SETTLE) -> Formation | None:
    """form_if_settled in its own transaction."""
    async with db.begin() as conn:
        return await form_if_settled(conn, task_id, seconds)


async def depart(db: Database, task_id: int, generation: int, client_ids: list[str], reason: str = "paused", *,
                 failure: bool = False) -> Left:
    """leave() in its own transaction."""
    async with db.begin() as conn:
        return await leave(conn, task_id, generation, client_ids, reason, failure=failure, max_attempts=3)


async def messages_of(db: Database, task_id: int) -> list[str]:
    """The task's log messages, oldest first."""
    async with db.connect() as conn:
        return list((await conn.execute(select(task_logs.c.message).where(task_logs.c.task_id == task_id)
                                        .order_by(task_logs.c.id))).scalars())


async def formed_2_of_3(db: Database, caps: dict[str, Capacity]) -> tuple[int, Formation]:
    """An elastic 2..3 task formed by a and b after the settle time."""
    task_id = await add_elastic(db)
    for client_id in ("a", "b"):
        got = await claim(db, client_id, caps[client_id])
        assert got is not None and got.task_id == task_id and not got.formed
    await claims_age(db, task_id, 10)
    formation = await settle(db, task_id)
    assert formation is not None
    return task_id, formation


async def formed_3_of_3(db: Database) -> tuple[int, Formation]:
    """An elastic 2..3 task filled by a (most GPU memory: rank 0), b and c."""
    caps = {"a": await register(db, "a", gpu_mb=8000), "b": await register(db, "b", gpu_mb=4000),
            "c": await register(db, "c", gpu_mb=2000)}
    task_id = await add_elastic(db)
    got = None
    for client_id in ("c", "b", "a"):
        got = await claim(db, client_id, caps[client_id])
    assert got is not None and got.formation is not None
    assert got.formation.ranks == {"a": 0, "b": 1, "c": 2}
    return task_id, got.formation


# --- forming ------------------------------------------------------------------------------------------------------


async def test_min_clients_form_after_the_settle_time_not_before(db: Database) -> None:
    """2 of 3 holders: no group while a rank was taken within the settle time, or below min_clients; then it forms
    once, with dense ranks, and a member that waited reads the same formation."""
    caps = {cid: await register(db, cid, gpu_mb=gpu) for cid, gpu in (("a", 2000), ("b", 8000))}
    task_id = await add_elastic(db)
    first = await claim(db, "a", caps["a"])
    assert first is not None and not first.formed
    await claims_age(db, task_id, 60)
    assert await settle(db, task_id) is None  # one holder, min_clients is 2: waits however long
    second = await claim(db, "b", caps["b"])
    assert second is not None and not second.formed
    assert await settle(db, task_id) is None  # b claimed just now
    await claims_age(db, task_id, 2)
    assert await settle(db, task_id) is None  # 2 s < the 5 s settle time
    assert (await task_row(db, task_id))["status"] == "pending" and await run_row(db, task_id) is None

    await claims_age(db, task_id, 10)
    formation = await settle(db, task_id)
    assert formation is not None
    assert (formation.generation, formation.n_clients, formation.min_clients, formation.max_clients) == (1, 2, 2, 3)
    assert formation.ranks == {"b": 0, "a": 1} and formation.coordinator_id == "b"  # elected: most GPU memory
    assert formation.elastic
    row = await task_row(db, task_id)
    assert row["status"] == "running" and row["client_id"] == "b"
    assert await ranks_of(db, task_id) == {"b": 0, "a": 1}
    assert await settle(db, task_id) is None  # formed once; the other holder reads it
    async with db.connect() as conn:
        assert await formation_of(conn, task_id) == formation


async def test_a_full_elastic_group_forms_at_once_and_a_fixed_one_never_settles(db: Database) -> None:
    """3 of 3 form with the third claim; a task without min_clients is a fixed group: form_if_settled never forms
    it, and its formation says min = max = n_clients."""
    task_id, formation = await formed_3_of_3(db)
    assert (formation.generation, formation.n_clients, formation.min_clients, formation.max_clients) == (1, 3, 2, 3)

    caps = {cid: await register(db, cid) for cid in ("x", "y", "z")}
    fixed = await add_task(db, n_clients=3)
    for client_id in ("x", "y"):
        got = await claim(db, client_id, caps[client_id])
        assert got is not None and got.task_id == fixed and not got.formed
    await claims_age(db, fixed, 60)
    assert await settle(db, fixed) is None
    assert (await task_row(db, fixed))["status"] == "pending"
    got = await claim(db, "z", caps["z"])
    assert got is not None and got.formation is not None
    assert (got.formation.n_clients, got.formation.min_clients, got.formation.max_clients) == (3, 3, 3)
    assert not got.formation.elastic


async def test_concurrent_holders_form_the_group_once(database_url: str) -> None:
    """Both holders (own Databases) call form_if_settled at once: one forms, generation 1, ranks dense."""
    async with upgraded(database_url) as setup:
        caps = {cid: await register(setup, cid) for cid in ("a", "b")}
        task_id = await add_elastic(setup)
        for client_id in ("a", "b"):
            assert await claim(setup, client_id, caps[client_id]) is not None
        await claims_age(setup, task_id, 10)
        holders = [create_database(database_url, pool_size=1) for _ in range(2)]
        try:
            formed = await asyncio.gather(*(settle(h, task_id) for h in holders))
        finally:
            for holder in holders:
                await holder.dispose()
        assert sorted(f is None for f in formed) == [False, True]
        run = await run_row(setup, task_id)
        assert run is not None and run["generation"] == 1
        assert sorted((await ranks_of(setup, task_id)).values()) == [0, 1]


# --- admission ----------------------------------------------------------------------------------------------------


async def test_a_newcomer_joins_a_running_2_of_3_group(db: Database) -> None:
    """A third client's claim admits it: the next rank, generation + 1, the coordinator kept, the rendezvous cleared,
    the claim's formation set; a fourth client finds no room."""
    caps = {cid: await register(db, cid, gpu_mb=gpu) for cid, gpu in (("a", 8000), ("b", 4000), ("c", 16000),
                                                                       ("d", 0))}
    task_id, formation = await formed_2_of_3(db, caps)
    assert formation.ranks == {"a": 0, "b": 1}
    async with db.begin() as conn:
        await publish_rendezvous(conn, task_id, formation.generation, "a", "10.0.0.1", 29500)

    joined = await claim(db, "c", caps["c"])
    assert joined is not None and joined.task_id == task_id and joined.rank == 2 and joined.n_clients == 3
    assert joined.formation is not None
    after = joined.formation
    assert after.generation == formation.generation + 1
    assert after.ranks == {"a": 0, "b": 1, "c": 2}  # dense; c has the most GPU memory but does not take rank 0
    assert after.coordinator_id == "a" and (after.n_clients, after.min_clients, after.max_clients) == (3, 2, 3)
    assert [m.hostname for m in after.members] == ["a.lan", "b.lan", "c.lan"]
    run = await run_row(db, task_id)
    assert run is not None and run["generation"] == after.generation and run["coordinator_id"] == "a"
    assert run["rendezvous_host"] is None and run["rendezvous_port"] is None and run["failures"] == 0
    row = await task_row(db, task_id)
    assert row["status"] == "running" and row["client_id"] == "a"
    assert await ranks_of(db, task_id) == {"a": 0, "b": 1, "c": 2}
    assert (await messages_of(db, task_id))[-1] == "membership: c joined; 3 of 2..3 members, generation 2"
    with pytest.raises(Fenced):  # the old generation is over for everyone
        async with db.begin() as conn:
            await check_fence(conn, task_id, formation.generation)

    assert await claim(db, "d", caps["d"]) is None  # full
    async with db.begin() as conn:
        assert await admit(conn, task_id, "a") is None  # a member is never admitted twice
    assert (await run_row(db, task_id) or {})["generation"] == after.generation


async def test_admission_comes_after_pending_work_and_meets_the_same_filters(db: Database) -> None:
    """A pending task is claimed before a running group with room; a running group this machine cannot run (its
    requirements, or a skipped task) is not joined, nor is a fixed-size running group."""
    caps = {cid: await register(db, cid) for cid in ("a", "b", "c")}
    task_id, formation = await formed_2_of_3(db, caps)
    pending = await add_task(db, n_clients=1, priority=-5)
    first = await claim(db, "c", caps["c"])
    assert first is not None and first.task_id == pending  # pending first, even at a lower priority
    assert await claim(db, "c", caps["c"], skip=[task_id]) is None  # skipped: not joined; the single one is full
    hungry = await add_elastic(db, requirements={"min_ram": 32768}, priority=9)
    async with db.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(requirements={"min_ram": 32768}))
    assert await claim(db, "c", caps["c"]) is None  # neither the pending nor the running elastic task fits
    assert (await task_row(db, hungry))["status"] == "pending"
    assert (await run_row(db, task_id) or {})["generation"] == formation.generation
    async with db.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(requirements={"min_ram": 1024}))
    got = await claim(db, "c", caps["c"])
    assert got is not None and got.task_id == task_id and got.formed and got.rank == 2
    assert (await run_row(db, task_id) or {})["generation"] == formation.generation + 1


# --- leaving ------------------------------------------------------------------------------------------------------


async def test_leave_shrinks_the_group_without_a_failure(db: Database) -> None:
    """Rank 0 leaves a 3-member 2..3 group: ranks freed and dense in the old order, generation + 1 under the new rank
    0, no failure, rendezvous cleared, the old generation fenced; the same generation again is stale."""
    task_id, formation = await formed_3_of_3(db)
    g = formation.generation
    async with db.begin() as conn:
        await publish_rendezvous(conn, task_id, g, "a", "10.0.0.1", 29500)

    left = await depart(db, task_id, g, ["a"], "the volunteer paused donation")
    assert left.kind == "shrunk" and left.status is None and left.formation is not None
    shrunk = left.formation
    assert shrunk.generation == g + 1 and shrunk.ranks == {"b": 0, "c": 1} and shrunk.coordinator_id == "b"
    assert (shrunk.n_clients, shrunk.min_clients, shrunk.max_clients) == (2, 2, 3)
    assert await ranks_of(db, task_id) == {"b": 0, "c": 1}
    run = await run_row(db, task_id)
    assert run is not None and run["generation"] == g + 1 and run["failures"] == 0
    assert run["coordinator_id"] == "b" and run["rendezvous_host"] is None
    row = await task_row(db, task_id)
    assert row["status"] == "running" and row["client_id"] == "b" and not row["error_log"]
    assert (await messages_of(db, task_id))[-1] == (
        "membership: a left (the volunteer paused donation); 2 of 2..3 members, generation 2")
    with pytest.raises(Fenced):
        async with db.begin() as conn:
            await update_task_fenced(conn, task_id, g, "a", {"result": {"progress": 50.0}})
    async with db.connect() as conn:
        assert await formation_of(conn, task_id) == shrunk

    before = await snapshot(db, task_id)
    assert await depart(db, task_id, g, ["c"]) == Left("stale")  # a generation that is over writes nothing
    assert await depart(db, task_id, g + 1, ["a"]) == Left("stale")  # not a member any more
    assert await snapshot(db, task_id) == before


async def test_leave_of_a_middle_rank_keeps_rank_0(db: Database) -> None:
    """Rank 1 leaves: rank 0 stays rank 0 and coordinator; rank 2 becomes 1."""
    task_id, formation = await formed_3_of_3(db)
    left = await depart(db, task_id, formation.generation, ["b"], "stopped", failure=True)
    assert left.kind == "shrunk" and left.formation is not None
    assert left.formation.ranks == {"a": 0, "c": 1} and left.formation.coordinator_id == "a"
    assert (await run_row(db, task_id) or {})["failures"] == 0  # a departure the group survives is no failure


async def test_leave_below_min_clients_ends_the_attempt_as_today(db: Database) -> None:
    """Two members of a 2..3 group leave at once: fewer than min_clients remain, so the attempt ends as end_attempt
    ends it (ranks freed, pending, the failure counted when it is one); a fixed group ends on any departure."""
    task_id, formation = await formed_3_of_3(db)
    left = await depart(db, task_id, formation.generation, ["b", "c"], "rank 1 (b) reported a failure", failure=True)
    assert left == Left("ended", status="pending")
    row, run = await task_row(db, task_id), await run_row(db, task_id)
    assert row["status"] == "pending" and "rank 1 (b) reported a failure" in row["error_log"]
    assert run is not None and run["generation"] == formation.generation + 1 and run["failures"] == 1
    assert run["coordinator_id"] is None
    assert await ranks_of(db, task_id) == {}

    caps = {cid: await register(db, cid) for cid in ("x", "y")}
    fixed = await add_task(db, n_clients=2, priority=5)
    got = None
    for client_id in ("x", "y"):
        got = await claim(db, client_id, caps[client_id])
    assert got is not None and got.formation is not None and got.task_id == fixed
    left = await depart(db, fixed, got.formation.generation, ["y"], "paused")
    assert left == Left("ended", status="pending")
    assert (await run_row(db, fixed) or {})["failures"] == 0 and await ranks_of(db, fixed) == {}


async def test_a_failure_needs_max_attempts(db: Database) -> None:
    """leave() counting a failure without max_attempts is a programming error, refused before anything is written."""
    task_id, formation = await formed_3_of_3(db)
    before = await snapshot(db, task_id)
    with pytest.raises(ValueError, match="max_attempts"):
        async with db.begin() as conn:
            await leave(conn, task_id, formation.generation, ["a"], "x", failure=True)
    assert await snapshot(db, task_id) == before


async def heartbeats(db: Database, *, fresh: tuple[str, ...], silent: tuple[str, ...]) -> None:
    """Clients seen just now, and clients silent for 30 s (the sweep's timeout is 5 s)."""
    now = await now_of(db)
    async with db.begin() as conn:
        for client_id in fresh:
            await set_client_columns(conn, client_id, {"last_seen": now})
        for client_id in silent:
            await set_client_columns(conn, client_id, {"last_seen": now - timedelta(seconds=30)})


# --- the failure sweep --------------------------------------------------------------------------------------------


async def test_sweep_shrinks_an_elastic_group_whose_member_went_silent(db: Database, tmp_path: Path) -> None:
    """A member silent for 30 s leaves its 2..3 group: the task keeps running with two dense ranks, a new
    generation, no failure counted, and a membership line in its log; a second sweep changes nothing."""
    task_id, formation = await formed_3_of_3(db)
    await register(db, "sweeper")
    settings = sweep_settings(tmp_path)
    sweep = FailureSweep(db, lambda: settings, "sweeper")
    assert await sweep.sweep() == []
    await heartbeats(db, fresh=("a", "c", "sweeper"), silent=("b",))
    assert await sweep.sweep() == [task_id]

    row, run = await task_row(db, task_id), await run_row(db, task_id)
    assert row["status"] == "running" and not row["error_log"]
    assert run is not None and run["generation"] == formation.generation + 1 and run["failures"] == 0
    assert await ranks_of(db, task_id) == {"a": 0, "c": 1}
    assert re.fullmatch(r"membership: b left \(rank 1 \(b\) stopped heartbeating \(last seen 3\d s ago\)\); "
                        r"2 of 2\.\.3 members, generation 2", (await messages_of(db, task_id))[-1])
    assert await sweep.sweep() == []

    # The next silent member takes the group below min_clients: the attempt ends as today.
    await heartbeats(db, fresh=("a", "sweeper"), silent=("c",))
    assert await sweep.sweep() == [task_id]
    row, run = await task_row(db, task_id), await run_row(db, task_id)
    assert row["status"] == "pending" and "rank 1 (c) stopped heartbeating" in row["error_log"]
    assert run is not None and run["generation"] == formation.generation + 2 and run["failures"] == 1
    assert await ranks_of(db, task_id) == {}


async def test_concurrent_sweeps_shrink_a_group_once(database_url: str, tmp_path: Path) -> None:
    """Two agents sweeping at once (own Databases) remove the silent member once: one generation step."""
    async with upgraded(database_url) as setup:
        task_id, formation = await formed_3_of_3(setup)
        await heartbeats(setup, fresh=("a", "b"), silent=("c",))
        settings = sweep_settings(tmp_path)
        sweepers = [create_database(database_url, pool_size=1) for _ in range(2)]
        try:
            results = await asyncio.gather(*(FailureSweep(d, lambda: settings, cid).sweep()
                                             for d, cid in zip(sweepers, ("a", "b"), strict=True)))
        finally:
            for d in sweepers:
                await d.dispose()
        assert sorted(results, key=len) == [[], [task_id]]
        run = await run_row(setup, task_id)
        assert run is not None and run["generation"] == formation.generation + 1 and run["failures"] == 0
        assert await ranks_of(setup, task_id) == {"a": 0, "b": 1}
        assert len([m for m in await messages_of(setup, task_id) if m.startswith("membership: c left")]) == 1


# --- the agent's side: the recorder settles, the scheduler forms -------------------------------------------------


def holds_work(scheduler: Scheduler) -> bool:
    """The scheduler holds a rank (joined or running), read afresh."""
    return scheduler.busy


async def test_a_stopped_member_leaves_and_the_joined_scheduler_forms(tmp_path: Path, sqlite_url: str) -> None:
    """A real agent: its recorder settles a stopped rank of an elastic group by leaving it (the group goes on); its
    scheduler, holding a rank of a settled 2..3 task, forms the group and starts the run."""
    from app.agent import Agent

    db = create_database(sqlite_url)
    await upgrade(db)
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "d"), "elastic_settle": "5s"},
                             config_file=tmp_path / "none.toml")
    agent = Agent(settings, db)
    try:
        await agent.heartbeat.register()
        me = agent.client_id
        caps = {cid: await register(db, cid) for cid in ("b", "c")}
        task_id = await add_elastic(db)
        for client_id in ("b", "c"):
            assert await claim(db, client_id, caps[client_id]) is not None
        async with db.begin() as conn:
            formed = await claiming.claim_next(conn, me, agent.donation.capacity())
        assert formed is not None and formed.formation is not None and formed.formation.n_clients == 3

        ctx = await agent.scheduler.context_for(formed.formation)
        recorder = RunRecorder(db, ctx)
        assert recorder.generation == formed.formation.generation
        await recorder.settle(Outcome("stopped", "the volunteer paused donation"))
        row, run = await task_row(db, task_id), await run_row(db, task_id)
        assert row["status"] == "running" and set(await ranks_of(db, task_id)) == {"b", "c"}
        assert run is not None and run["generation"] == formed.formation.generation + 1 and run["failures"] == 0
        assert any(m.startswith(f"membership: {me} left (the volunteer paused donation); 2 of 2..3")
                   for m in await messages_of(db, task_id))
        await recorder.settle(Outcome("failed", "late"))  # its generation is over: nothing more happens
        assert (await run_row(db, task_id) or {})["generation"] == run["generation"]

        second = await add_elastic(db, priority=-1)
        async with db.begin() as conn:
            held = await claiming.claim_next(conn, me, agent.donation.capacity())
        assert held is not None and held.task_id == second and not held.formed
        assert await claim(db, "b", caps["b"]) is not None
        scheduler = agent.scheduler
        scheduler.joined = Joined(second, time.monotonic())
        await scheduler.step()
        assert scheduler.joined is not None and (await task_row(db, second))["status"] == "pending"  # not settled
        await claims_age(db, second, 10)
        await scheduler.step()
        assert scheduler.describe()["joined"] is None and holds_work(scheduler)  # formed: the run is starting
        assert (await task_row(db, second))["status"] == "running"
        assert set(await ranks_of(db, second)) == {me, "b"}
        await scheduler.release_current("the volunteer paused donation")
        assert not holds_work(scheduler)
        assert (await task_row(db, second))["status"] == "pending"  # 1 left of 2..3: below min_clients
    finally:
        await db.dispose()


async def test_a_restarted_member_leaves_its_elastic_group(tmp_path: Path, sqlite_url: str) -> None:
    """An agent that restarts voids what it held: it leaves a running elastic group, which goes on without it."""
    from app.agent import Agent

    db = create_database(sqlite_url)
    await upgrade(db)
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "d")}, config_file=tmp_path / "none.toml")
    agent = Agent(settings, db)
    try:
        await agent.heartbeat.register()
        me = agent.client_id
        caps = {cid: await register(db, cid) for cid in ("b", "c")}
        task_id = await add_elastic(db)
        for client_id in ("b", "c"):
            assert await claim(db, client_id, caps[client_id]) is not None
        async with db.begin() as conn:
            formed = await claiming.claim_next(conn, me, agent.donation.capacity())
        assert formed is not None and formed.formation is not None
        await agent.scheduler.void_previous_session()
        row, run = await task_row(db, task_id), await run_row(db, task_id)
        assert row["status"] == "running" and set(await ranks_of(db, task_id)) == {"b", "c"}
        assert sorted((await ranks_of(db, task_id)).values()) == [0, 1]
        assert run is not None and run["generation"] == formed.formation.generation + 1 and run["failures"] == 0
        assert any(m.startswith(f"membership: {me} left (client {me} restarted)") for m in await messages_of(db, task_id))
    finally:
        await db.dispose()


async def test_why_an_elastic_task_waits_counts_min_clients(db: Database) -> None:
    """A 2..3 task waits for two able clients, not three."""
    await register(db, "a", gpu_mb=24000)
    weak = await add_elastic(db, requirements={"min_gpu_memory": 16000})
    reason = (await service.why_pending(db, [await task_row(db, weak)]))[weak]
    assert reason == "needs 2 clients meeting its requirements, 1 active client(s) do"
    await register(db, "b", gpu_mb=24000)
    assert (await service.why_pending(db, [await task_row(db, weak)]))[weak] is None
