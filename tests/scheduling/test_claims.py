"""Claiming ranks on MariaDB and SQLite: many agents with their own pools, order, requirements, election, cancel."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import Database, create_database
from app.db.migrate import upgrade
from app.db.queries import assignments as assignment_queries
from app.db.queries import clients as client_queries
from app.db.queries import tasks as task_queries
from app.db.queries.claims import (
    assignments_of_client,
    db_now,
    get_run,
    pending_for_other_recipes,
    release_join,
    release_stale_joins,
    retry,
    set_priority,
    update_task_fenced,
)
from app.db.schema import clients, task_assignments, task_runs, tasks
from app.errors import Conflict, NotFound
from app.scheduling import service
from app.scheduling.claiming import Claim, active_capacities, cancel, claim_next, formation_of
from app.scheduling.decide import Capacity, Recipes, explain_pending

STRESS_CORES = 32
STRESS_RAM_MB = 64 * 1024


# --- helpers (also used by test_fencing) -------------------------------------------------------------


@asynccontextmanager
async def upgraded(url: str) -> AsyncIterator[Database]:
    """A Database at the current schema revision, disposed at the end."""
    database = create_database(url)
    try:
        await upgrade(database)
        yield database
    finally:
        await database.dispose()



async def register(db: Database, client_id: str, *, gpu_mb: int = 0, cores: int = 8, ram_mb: int = 16384,
                   status: str = "active", last_seen: datetime | None = None) -> Capacity:
    """Register a client with this hardware (and optionally status/last_seen); returns its capacity."""
    async with db.begin() as conn:
        await client_queries.upsert_client(
            conn, client_id=client_id, cpu_info={"logical_cores": cores}, ram_info={"total_mb": ram_mb},
            gpu_info=[{"name": "GPU", "memory_total_mb": gpu_mb}] if gpu_mb else [], session_info={},
            version="test", hostname=f"{client_id}.lan",
        )
        changes: dict[str, Any] = {}
        if status != "active":
            changes["status"] = status
        if last_seen is not None:
            changes["last_seen"] = last_seen
        if changes:
            await set_client_columns(conn, client_id, changes)
    return Capacity(gpu_memory_mb=gpu_mb, cpu_cores=cores, ram_mb=ram_mb)


async def set_client_columns(conn: AsyncConnection, client_id: str, changes: dict[str, Any]) -> None:
    """Set columns of a client row directly (status, last_seen)."""
    await conn.execute(update(clients).where(clients.c.id == client_id).values(**changes))


def task_config(n_clients: int) -> dict[str, Any]:
    """A task config: single for one client, distributed otherwise."""
    return {"name": f"t{n_clients}", "distributed": n_clients > 1, "n_clients": n_clients}


async def add_task(db: Database, *, n_clients: int = 1, priority: int = 0, requirements: dict[str, Any] | None = None,
                   created_at: datetime | None = None) -> int:
    """Insert a pending task with insert_task (and an explicit created_at if given); returns its id."""
    async with db.begin() as conn:
        task_id = await task_queries.insert_task(conn, type="training", requirements=requirements or {},
                                                 config=task_config(n_clients), priority=priority)
        if created_at is not None:
            await conn.execute(update(tasks).where(tasks.c.id == task_id).values(created_at=created_at))
    return task_id


async def claim(db: Database, client_id: str, capacity: Capacity, skip: list[int] | None = None) -> Claim | None:
    """One claim in its own transaction (optionally skipping some tasks)."""
    async with db.begin() as conn:
        return await claim_next(conn, client_id, capacity, skip_task_ids=skip or ())


async def task_row(db: Database, task_id: int) -> dict[str, Any]:
    """The task row (it must exist)."""
    async with db.connect() as conn:
        row = await task_queries.get_task(conn, task_id)
    assert row is not None
    return row


async def run_row(db: Database, task_id: int) -> dict[str, Any] | None:
    """The task_runs row, or None."""
    async with db.connect() as conn:
        return await get_run(conn, task_id)


async def ranks_of(db: Database, task_id: int) -> dict[str, int]:
    """client id -> rank of every assignment of the task."""
    async with db.connect() as conn:
        return {a["client_id"]: a["rank"] for a in await assignment_queries.list_for_task(conn, task_id)}


async def complete(db: Database, task_id: int, generation: int, client_id: str) -> None:
    """Mark the task completed as its coordinator of this generation."""
    async with db.begin() as conn:
        await update_task_fenced(conn, task_id, generation, client_id, {"status": "completed"})


async def now_of(db: Database) -> datetime:
    """The database's clock."""
    async with db.connect() as conn:
        return await db_now(conn)


# --- the stress test ---------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the agents of a stress run did, counted in memory."""

    total: int
    claims: int = 0
    releases: int = 0
    integrity_retries: int = 0
    empty_claims: int = 0
    polls: int = 0
    formations: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)
    completions: Counter[int] = field(default_factory=Counter)

    @property
    def done(self) -> bool:
        """True once every task was completed."""
        return len(self.completions) >= self.total


async def _wait_for_group(db: Database, client_id: str, task_id: int, ledger: Ledger, join_wait: float,
                          poll: float) -> tuple[int, int] | None:
    """Hold the rank until the group forms ((rank, generation)), or give it back after join_wait (None).

    The wait is jittered like the scheduler's claim interval: agents that give back in lockstep and claim again
    at the same moment would skip each other's locked task (SKIP LOCKED) and split into groups again.
    """
    since = time.monotonic()
    join_wait *= random.uniform(1.0, 1.5)
    while True:
        await asyncio.sleep(poll)
        ledger.polls += 1
        async with db.connect() as conn:
            held = [a for a in await assignments_of_client(conn, client_id) if a["task_id"] == task_id]
        assert len(held) == 1, f"{client_id} lost its rank of task {task_id}: {held}"
        if held[0]["task_status"] != "pending":
            return held[0]["rank"], held[0]["generation"]
        if time.monotonic() - since > join_wait:
            async with db.begin() as conn:
                released = await release_join(conn, task_id, client_id)
            if released:
                ledger.releases += 1
                return None
            # The group formed between the poll and the release: read the rank on the next turn.


async def _agent(db: Database, client_id: str, capacity: Capacity, ledger: Ledger, join_wait: float,
                 poll: float, holding: Claim | None = None) -> None:
    """Claim (or start from a rank already held), wait for the group, complete as coordinator; until all are done."""
    while not ledger.done:
        if holding is not None:
            got, holding = holding, None
        else:
            try:
                async with db.begin() as conn:
                    got = await claim_next(conn, client_id, capacity)
            except IntegrityError:
                ledger.integrity_retries += 1
                continue
            if got is None:
                ledger.empty_claims += 1
                await asyncio.sleep(poll)
                continue
        ledger.claims += 1
        if got.formed:
            assert got.generation is not None
            rank, generation = got.rank, got.generation
        else:
            joined = await _wait_for_group(db, client_id, got.task_id, ledger, join_wait, poll)
            if joined is None:
                continue
            rank, generation = joined
        members = ledger.formations.setdefault((got.task_id, generation), {})
        assert client_id not in members
        members[client_id] = rank
        if rank == 0:
            async with db.begin() as conn:
                await update_task_fenced(conn, got.task_id, generation, client_id, {"status": "completed"})
            ledger.completions[got.task_id] += 1


async def _stress(url: str, *, agents: int, singles: int, distributed: int, pool_size: int) -> Ledger:
    """Drain singles + distributed tasks with `agents` agents, each on its own Database; check every count."""
    rng = random.Random(20240611)
    async with upgraded(url) as setup:
        client_ids = [f"agent-{i:02d}" for i in range(agents)]
        gpu = {cid: rng.choice([0, 4000, 8000, 12000, 16000, 24000]) for cid in client_ids}
        capacities = {cid: await register(setup, cid, gpu_mb=gpu[cid], cores=STRESS_CORES, ram_mb=STRESS_RAM_MB)
                      for cid in client_ids}
        sizes = [1] * singles + [rng.randint(2, 4) for _ in range(distributed)]
        rng.shuffle(sizes)
        base = datetime(2024, 1, 1)
        rows = [{"type": "training", "requirements": {}, "config": task_config(n), "priority": rng.randint(-3, 3),
                 "status": "pending", "created_at": base + timedelta(seconds=rng.randint(0, 86400)),
                 "updated_at": base} for n in sizes]
        async with setup.begin() as conn:
            await conn.execute(insert(tasks), rows)
            ids = list((await conn.execute(select(tasks.c.id).order_by(tasks.c.id))).scalars())
        n_of = {task_id: n for task_id, n in zip(ids, sizes, strict=False)}
        assert len(ids) == singles + distributed

        ledger = Ledger(total=len(ids))
        databases = [create_database(url, pool_size=pool_size) for _ in client_ids]
        started = time.monotonic()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(_agent(d, cid, capacities[cid], ledger, join_wait=0.5, poll=0.02)
                                 for d, cid in zip(databases, client_ids, strict=False))),
                timeout=240,
            )
        finally:
            for d in databases:
                await d.dispose()
        elapsed = time.monotonic() - started

        async with setup.connect() as conn:
            final = {r.id: (r.status, r.client_id)
                     for r in await conn.execute(select(tasks.c.id, tasks.c.status, tasks.c.client_id))}
            runs = {r.task_id: (r.generation, r.coordinator_id) for r in await conn.execute(select(task_runs))}
            held: dict[int, dict[str, int]] = {}
            for r in await conn.execute(select(task_assignments.c.task_id, task_assignments.c.client_id,
                                               task_assignments.c.rank)):
                assert r.client_id not in held.setdefault(r.task_id, {})
                held[r.task_id][r.client_id] = r.rank

    # Every task completed exactly once, none lost.
    assert set(final) == set(ids)
    assert Counter(status for status, _ in final.values()) == {"completed": len(ids)}
    assert set(ledger.completions) == set(ids)
    assert set(ledger.completions.values()) == {1}
    # Per task exactly one formation, recorded by every member, with one coordinator and ranks 0..n-1.
    formed_per_task = Counter(task_id for task_id, _ in ledger.formations)
    assert formed_per_task == Counter({task_id: 1 for task_id in ids})
    for (task_id, generation), members in ledger.formations.items():
        n = n_of[task_id]
        assert sorted(members.values()) == list(range(n)), (task_id, members)
        coordinators = [cid for cid, rank in members.items() if rank == 0]
        assert len(coordinators) == 1
        coordinator = coordinators[0]
        assert coordinator == min(members, key=lambda cid: (-gpu[cid], cid))  # the election rule
        assert runs[task_id] == (generation, coordinator)
        assert runs[task_id][0] == formed_per_task[task_id] == 1
        assert final[task_id] == ("completed", coordinator)
        assert held[task_id] == members  # the database's ranks are the ones the members saw
    # Every claimed rank is either part of a formed group or was given back.
    assert ledger.claims == sum(sizes) + ledger.releases
    print(f"\nstress {url.split(':')[0]}: {agents} agents, {len(ids)} tasks ({singles} single, "
          f"{distributed} distributed, {sum(sizes)} ranks) in {elapsed:.1f} s; claims {ledger.claims}, "
          f"releases {ledger.releases}, "
          f"integrity retries {ledger.integrity_retries}, empty claims {ledger.empty_claims}, polls {ledger.polls}")
    return ledger


@pytest.mark.slow
@pytest.mark.mysql
async def test_stress_mariadb_20_agents_2000_tasks(mysql_url: str) -> None:
    """20 agents with their own pools drain 1,600 single and 400 distributed tasks on MariaDB; every count checks."""
    await _stress(mysql_url, agents=20, singles=1600, distributed=400, pool_size=1)


@pytest.mark.slow
async def test_stress_sqlite_4_agents_300_tasks(sqlite_url: str) -> None:
    """4 agents with their own engines drain 240 single and 60 distributed tasks on one SQLite file."""
    await _stress(sqlite_url, agents=4, singles=240, distributed=60, pool_size=1)


async def test_split_groups_give_ranks_back(database_url: str) -> None:
    """Three agents each holding a rank of a different 3-client task give ranks back until every task forms."""
    async with upgraded(database_url) as setup:
        await _split_groups(setup, database_url)


async def _split_groups(setup: Database, database_url: str) -> None:
    """The body of test_split_groups_give_ranks_back."""
    caps = {cid: await register(setup, cid, gpu_mb=gpu) for cid, gpu in (("x", 1000), ("y", 3000), ("z", 2000))}
    ids = [await add_task(setup, n_clients=3, priority=p) for p in (3, 2, 1)]
    holds = {}
    for cid, task_id in zip(caps, ids, strict=False):
        holds[cid] = await claim(setup, cid, caps[cid], skip=[t for t in ids if t != task_id])
        assert holds[cid] is not None and holds[cid].task_id == task_id and not holds[cid].formed
    ledger = Ledger(total=3)
    databases = {cid: create_database(database_url, pool_size=1) for cid in caps}
    try:
        await asyncio.wait_for(asyncio.gather(*(
            _agent(databases[cid], cid, caps[cid], ledger, join_wait=0.3, poll=0.02, holding=holds[cid])
            for cid in caps)), timeout=60)
    finally:
        for d in databases.values():
            await d.dispose()
    # The first group to form needs all three agents, so the two that held other tasks gave those back.
    assert ledger.releases >= 2
    assert ledger.claims == 9 + ledger.releases
    assert ledger.completions == Counter({task_id: 1 for task_id in ids})
    for task_id in ids:
        assert (await task_row(setup, task_id))["client_id"] == "y"
        assert await ranks_of(setup, task_id) == {"y": 0, "z": 1, "x": 2}
        assert ledger.formations[(task_id, 1)] == {"y": 0, "z": 1, "x": 2}


# --- order, requirements, election -------------------------------------------------------------------


async def test_claim_order_priority_then_created_at(db: Database) -> None:
    """One agent takes tasks by priority DESC, then created_at ASC (not by id)."""
    cap = await register(db, "solo")
    base = datetime(2024, 5, 1, 12, 0, 0)
    # (priority, created_at offset in seconds), inserted in an order that differs from both keys.
    specs = [(0, 50), (5, 30), (0, 10), (5, 40), (-2, 0), (9, 90), (0, 30), (5, 20)]
    ids = [await add_task(db, priority=p, created_at=base + timedelta(seconds=s)) for p, s in specs]
    expected = [task_id for task_id, _ in sorted(zip(ids, specs, strict=False), key=lambda item: (-item[1][0], item[1][1]))]
    order = []
    while (got := await claim(db, "solo", cap)) is not None:
        assert got.formed and got.rank == 0 and got.generation == 1
        order.append(got.task_id)
        await complete(db, got.task_id, 1, "solo")
    assert order == expected
    assert order != ids


async def test_set_priority_changes_the_order(db: Database) -> None:
    """set_priority moves a task ahead; an unknown id is NotFound."""
    cap = await register(db, "solo")
    base = datetime(2024, 5, 1)
    first = await add_task(db, created_at=base)
    second = await add_task(db, created_at=base + timedelta(seconds=1))
    async with db.begin() as conn:
        await set_priority(conn, second, 7)
    assert (await task_row(db, second))["priority"] == 7
    got = await claim(db, "solo", cap)
    assert got is not None and got.task_id == second
    with pytest.raises(NotFound):
        async with db.begin() as conn:
            await set_priority(conn, 999_999, 1)
    assert (await task_row(db, first))["status"] == "pending"


@pytest.mark.parametrize("key,need,largest", [
    ("min_gpu_memory", 100_000, 8000),
    ("min_ram", 200_000, 16384),
    ("min_cpu_cores", 48, 8),
])
async def test_requirements_keep_a_task_pending(db: Database, key: str, need: int, largest: int) -> None:
    """A task needing more than any client has is never claimed, says why, and goes to a client that has it."""
    small = await register(db, "small", gpu_mb=8000, cores=8, ram_mb=16384)
    await register(db, "cpu-only", gpu_mb=0, cores=4, ram_mb=8192)
    cpu_only = Capacity(0, 4, 8192)
    big_task = await add_task(db, priority=10, requirements={key: need})
    plain = [await add_task(db, priority=p) for p in (3, 1, 0)]
    taken = []
    for client_id, cap in (("small", small), ("cpu-only", cpu_only), ("small", small), ("cpu-only", cpu_only)):
        got = await claim(db, client_id, cap)
        if got is None:
            continue
        taken.append(got.task_id)
        await complete(db, got.task_id, got.generation or 0, client_id)
    assert taken == plain
    assert await claim(db, "small", small) is None
    assert await claim(db, "cpu-only", cpu_only) is None
    row = await task_row(db, big_task)
    assert row["status"] == "pending" and await ranks_of(db, big_task) == {}

    expected = f"no active client meets {key}={need} (largest: {largest})"
    assert (await service.why_pending(db, [row]))[big_task] == expected
    async with db.connect() as conn:
        capacities = await active_capacities(conn)
    assert sorted(capacities, key=lambda c: c.cpu_cores) == [cpu_only, small]
    assert explain_pending(row["requirements"], capacities) == expected
    assert (await service.get(db, big_task))["waiting_for"] == expected

    big = await register(db, "big", gpu_mb=120_000, cores=64, ram_mb=262_144)
    assert (await service.why_pending(db, [await task_row(db, big_task)]))[big_task] is None
    got = await claim(db, "big", big)
    assert got is not None and got.task_id == big_task and got.formed
    assert (await task_row(db, big_task))["client_id"] == "big"


async def test_distributed_requirement_counts_clients(db: Database) -> None:
    """A 3-client task with only two able clients says so and is not formed by unable clients."""
    a = await register(db, "a", gpu_mb=24000)
    await register(db, "b", gpu_mb=24000)
    weak = await register(db, "weak", gpu_mb=2000)
    task_id = await add_task(db, n_clients=3, requirements={"min_gpu_memory": 16000})
    reason = (await service.why_pending(db, [await task_row(db, task_id)]))[task_id]
    assert reason == "needs 3 clients meeting its requirements, 2 active client(s) do"
    assert await claim(db, "weak", weak) is None
    got = await claim(db, "a", a)
    assert got is not None and not got.formed and got.rank == 0


async def test_election_orders_ranks_by_gpu_memory(db: Database) -> None:
    """Joined small, large, medium: rank 0 is the 8000 MB client, then 4000 MB, then the CPU-only one."""
    caps = {
        "c-small": await register(db, "c-small", gpu_mb=0, cores=16),
        "c-large": await register(db, "c-large", gpu_mb=8000, cores=4),
        "c-medium": await register(db, "c-medium", gpu_mb=4000, cores=8),
    }
    task_id = await add_task(db, n_clients=3)
    async with db.connect() as conn:
        assert await assignment_queries.available_ranks(conn, task_id) == [0, 1, 2]
    claims = []
    for step, client_id in enumerate(("c-small", "c-large", "c-medium")):
        got = await claim(db, client_id, caps[client_id])
        assert got is not None and got.task_id == task_id
        claims.append(got)
        if step < 2:
            assert not got.formed and got.rank == step and got.generation is None
            assert (await task_row(db, task_id))["status"] == "pending"
            async with db.connect() as conn:
                assert await assignment_queries.available_ranks(conn, task_id) == list(range(step + 1, 3))
                assert (await get_run(conn, task_id)) is None
    last = claims[-1]
    assert last.formed and last.generation == 1 and last.rank == 1 and last.n_clients == 3
    assert await ranks_of(db, task_id) == {"c-large": 0, "c-medium": 1, "c-small": 2}
    row = await task_row(db, task_id)
    run = await run_row(db, task_id)
    assert row["status"] == "running" and row["client_id"] == "c-large"
    assert run is not None and run["coordinator_id"] == "c-large" and run["generation"] == 1
    assert run["formed_at"] is not None
    async with db.connect() as conn:
        assert await assignment_queries.available_ranks(conn, task_id) == []
        held = await assignments_of_client(conn, "c-small")
    assert held == [{"task_id": task_id, "rank": 2, "status": "assigned", "task_status": "running", "generation": 1}]


async def test_the_claim_returns_the_formation_with_every_members_address(db: Database) -> None:
    """The claim that completes a group carries the Formation: generation, coordinator, ranks, hosts and addresses;
    a member that joined earlier reads the same Formation."""
    for client_id, ip, gpu in (("f-a", "10.0.0.1", 0), ("f-b", "10.0.0.2", 8000)):
        async with db.begin() as conn:
            await client_queries.upsert_client(
                conn, client_id=client_id, cpu_info={"logical_cores": 4}, ram_info={"total_mb": 8000},
                gpu_info=[{"memory_total_mb": gpu}] if gpu else [], version="t", hostname=f"{client_id}.lan",
                session_info={"addresses": [{"ip": ip, "prefix": 24, "interface": "eth0"}]})
    task_id = await add_task(db, n_clients=2)
    capacity = Capacity(gpu_memory_mb=8000, cpu_cores=4, ram_mb=8000)
    first = await claim(db, "f-a", capacity)
    assert first is not None and first.formation is None
    last = await claim(db, "f-b", capacity)
    assert last is not None and last.formation is not None
    formation = last.formation
    assert formation.task_id == task_id and formation.generation == 1 and formation.coordinator_id == "f-b"
    assert formation.ranks == {"f-b": 0, "f-a": 1} and formation.n_clients == 2
    assert formation.member("f-a").addresses == (("10.0.0.1", 24),) and formation.member("f-a").hostname == "f-a.lan"
    assert not formation.every_member_has_a_gpu
    async with db.connect() as conn:
        assert await formation_of(conn, task_id) == formation


async def test_a_task_naming_a_recipe_not_installed_here_is_not_claimed(db: Database) -> None:
    """With the installed recipes given, claim_next passes over a task naming another model or dataset (even at a
    higher priority) and takes the next one; the passed-over task stays pending with no rank taken."""
    capacity = await register(db, "r-1")
    async with db.begin() as conn:
        foreign = await task_queries.insert_task(conn, type="training", requirements={}, priority=9,
                                                 config={"name": "f", "model": "someone_elses", "dataset": "blobs"})
        ours = await task_queries.insert_task(conn, type="training", requirements={}, priority=1,
                                              config={"name": "o", "model": "mlp", "dataset": "blobs"})
    recipes = Recipes(frozenset({"mlp", "cnn"}), frozenset({"blobs"}))
    async with db.begin() as conn:
        got = await claim_next(conn, "r-1", capacity, recipes=recipes)
        assert got is not None and got.task_id == ours
        assert await pending_for_other_recipes(conn, recipes) == [(foreign, "someone_elses", "blobs")]
    assert await ranks_of(db, foreign) == {}
    assert (await task_row(db, foreign))["status"] == "pending"


@pytest.mark.parametrize("n_clients", [2, 3])
async def test_a_client_holds_one_rank_per_task(db: Database, n_clients: int) -> None:
    """Claiming again while holding a rank of the best pending task takes no second rank (the schema allows it)."""
    cap, other = await register(db, "a"), await register(db, "b")
    task_id = await add_task(db, n_clients=n_clients)
    got = await claim(db, "a", cap)
    assert got is not None and got.task_id == task_id and not got.formed
    assert await claim(db, "a", cap) is None
    assert await ranks_of(db, task_id) == {"a": 0}
    async with db.connect() as conn:
        assert len(await assignment_queries.list_for_task(conn, task_id)) == 1
        assert await assignment_queries.available_ranks(conn, task_id) == list(range(1, n_clients))
    got = await claim(db, "b", other)
    assert got is not None and got.task_id == task_id and got.rank == 1 and got.formed == (n_clients == 2)


async def test_release_join_only_before_formation(db: Database) -> None:
    """release_join frees an unformed rank (True) and refuses once the group formed (False)."""
    a, b = await register(db, "a"), await register(db, "b")
    task_id = await add_task(db, n_clients=2)
    assert await claim(db, "a", a) is not None
    async with db.begin() as conn:
        assert await release_join(conn, task_id, "a") is True
        assert await release_join(conn, task_id, "a") is False
    assert await ranks_of(db, task_id) == {}
    await claim(db, "a", a)
    got = await claim(db, "b", b)
    assert got is not None and got.formed
    async with db.begin() as conn:
        assert await release_join(conn, task_id, "a") is False
    assert set(await ranks_of(db, task_id)) == {"a", "b"}


# --- stale joins, cancel, retry ------------------------------------------------------------------------


async def test_release_stale_joins(db: Database) -> None:
    """Frees pending ranks held too long or by a silent/inactive client; keeps fresh ones and running groups."""
    now = await now_of(db)
    names = ("fresh", "slow", "silent", "gone")
    caps = {name: await register(db, name) for name in (*names, "runner", "partner")}
    pending = {name: await add_task(db, n_clients=2) for name in names}
    for name in names:
        others = [task_id for other, task_id in pending.items() if other != name]
        got = await claim(db, name, caps[name], skip=others)
        assert got is not None and got.task_id == pending[name] and not got.formed
    running = await add_task(db, n_clients=2, priority=-1)
    await claim(db, "runner", caps["runner"], skip=list(pending.values()))
    got = await claim(db, "partner", caps["partner"], skip=list(pending.values()))
    assert got is not None and got.task_id == running and got.formed
    async with db.begin() as conn:
        old = now - timedelta(seconds=300)
        await conn.execute(update(task_assignments).where(task_assignments.c.client_id.in_(["slow", "runner"]))
                           .values(assigned_at=old))
        await set_client_columns(conn, "silent", {"last_seen": now - timedelta(seconds=60)})
        await set_client_columns(conn, "runner", {"last_seen": now - timedelta(seconds=60)})
        await set_client_columns(conn, "gone", {"status": "inactive"})
    async with db.begin() as conn:
        freed = await release_stale_joins(conn, join_timeout=120, failure_timeout=10)
    assert freed == 3
    assert await ranks_of(db, pending["fresh"]) == {"fresh": 0}
    for name in ("slow", "silent", "gone"):
        assert await ranks_of(db, pending[name]) == {}
        assert (await task_row(db, pending[name]))["status"] == "pending"
    assert set(await ranks_of(db, running)) == {"runner", "partner"}
    async with db.begin() as conn:
        assert await release_stale_joins(conn, join_timeout=120, failure_timeout=10) == 0


async def test_cancel_pending_and_running(db: Database) -> None:
    """Cancel frees ranks of a pending or running task, fails it with a note, and refuses other statuses."""
    a, b = await register(db, "a", gpu_mb=8000), await register(db, "b")
    waiting = await add_task(db, n_clients=2, priority=5)
    assert (await claim(db, "a", a)) is not None
    assert await service.cancel(db, waiting) == "failed"
    row = await task_row(db, waiting)
    assert row["status"] == "failed" and row["client_id"] is None and "cancelled by the user" in row["error_log"]
    assert await ranks_of(db, waiting) == {}

    running = await add_task(db, n_clients=2)
    await claim(db, "a", a)
    got = await claim(db, "b", b)
    assert got is not None and got.task_id == running and got.formed and got.generation == 1
    async with db.begin() as conn:
        assert await cancel(conn, running) == "failed"
    row = await task_row(db, running)
    run = await run_row(db, running)
    assert row["status"] == "failed" and row["client_id"] is None
    assert "attempt 1 ended: cancelled by the user" in row["error_log"]
    assert run is not None and run["generation"] == 2 and run["coordinator_id"] is None and run["failures"] == 0
    assert await ranks_of(db, running) == {}

    done = await add_task(db)
    got = await claim(db, "a", a)
    assert got is not None and got.task_id == done
    await complete(db, done, 1, "a")
    for task_id in (done, running):
        with pytest.raises(Conflict):
            await service.cancel(db, task_id)
    with pytest.raises(NotFound):
        await service.cancel(db, 999_999)
    assert (await task_row(db, done))["status"] == "completed"


async def test_retry_failed_and_error(db: Database) -> None:
    """Retry puts failed/error tasks back with a fresh budget; other statuses Conflict; unknown ids NotFound."""
    a, b = await register(db, "a"), await register(db, "b")
    failed = await add_task(db, n_clients=2)
    await claim(db, "a", a)
    got = await claim(db, "b", b)
    assert got is not None and got.formed
    async with db.begin() as conn:
        assert await cancel(conn, failed) == "failed"
        assert await retry(conn, failed) == "pending"
    row = await task_row(db, failed)
    run = await run_row(db, failed)
    assert row["status"] == "pending" and row["client_id"] is None
    assert row["error_log"].endswith("retried by the user") and "cancelled" in row["error_log"]
    assert run is not None and run["generation"] == 3 and run["failures"] == 0 and run["coordinator_id"] is None
    assert await ranks_of(db, failed) == {}

    errored = await add_task(db, priority=-1)
    async with db.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == errored).values(status="error"))
    assert await service.retry(db, errored) == "pending"
    assert (await task_row(db, errored))["status"] == "pending"
    assert await run_row(db, errored) is None

    running = await add_task(db, priority=100)
    got = await claim(db, "a", a)
    assert got is not None and got.task_id == running and got.formed
    completed = await add_task(db, priority=100)
    got = await claim(db, "b", b)
    assert got is not None and got.task_id == completed
    await complete(db, completed, 1, "b")
    for task_id, status in ((failed, "pending"), (running, "running"), (completed, "completed")):
        with pytest.raises(Conflict):
            await service.retry(db, task_id)
        assert (await task_row(db, task_id))["status"] == status
    with pytest.raises(NotFound):
        await service.retry(db, 999_999)


async def test_every_claimed_rank_is_a_row(db: Database) -> None:
    """Five claims: four ranks of the better 4-client task (which forms), then the single task."""
    caps = {f"c{i}": await register(db, f"c{i}") for i in range(5)}
    four = await add_task(db, n_clients=4, priority=1)
    single = await add_task(db)
    results = [await claim(db, cid, cap) for cid, cap in caps.items()]
    assert [r.task_id if r else None for r in results] == [four, four, four, four, single]
    assert [r.formed if r else None for r in results] == [False, False, False, True, True]
    async with db.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(task_assignments))).scalar_one()
    assert count == 5
    assert sorted((await ranks_of(db, four)).values()) == [0, 1, 2, 3]
