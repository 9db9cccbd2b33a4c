"""Figure: the claim path — concurrent agents draining single tasks from MariaDB with claim_next, exactly once each."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db.engine import Database, create_database, mysql_error_code
from app.db.queries.claims import update_task_fenced
from app.errors import Fenced
from app.scheduling.claiming import claim_next
from app.scheduling.decide import Capacity
from benchmarks import dbserver
from benchmarks.common import Figure

CAPACITY = Capacity(gpu_memory_mb=0, cpu_cores=8, ram_mb=16384)
RETRYABLE = {1205, 1213}  # lock wait timeout, deadlock: an agent simply tries again
TARGET_RATE = 1000.0


@dataclass
class AgentStats:
    """What one simulated agent saw."""

    client_id: str
    claimed: list[int] = field(default_factory=list)
    claim_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    empty: int = 0
    retries: int = 0
    fenced: int = 0


def _setup(url: str, agents: int, tasks: int) -> list[str]:
    """Register the agents' clients and insert `tasks` pending single tasks in two statements."""
    client_ids = [f"bench-agent-{i:03d}" for i in range(agents)]
    cpu = json.dumps({"model": "bench", "physical_cores": 8, "logical_cores": 16, "mhz": 3000})
    ram = json.dumps({"total_mb": 32768, "available_mb": 16384})
    with dbserver.connect(url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO clients (id, cpu_info, ram_info, gpu_info, session_info, last_seen, status, version, hostname)"
            " VALUES (%s, %s, %s, '[]', '{}', NOW(), 'active', 'bench', %s)",
            [(cid, cpu, ram, cid) for cid in client_ids],
        )
        cursor.execute(
            "INSERT INTO tasks (type, requirements, status, created_at, updated_at, priority, config)"
            " SELECT 'training', JSON_OBJECT('min_gpu_memory', 0, 'min_cpu_cores', 1, 'min_ram', 1024), 'pending',"
            " NOW() - INTERVAL seq SECOND, NOW() - INTERVAL seq SECOND, 0,"
            " JSON_OBJECT('name', CONCAT('bench_', seq), 'model', 'mlp', 'dataset', 'synthetic', 'batch_size', 32,"
            "             'learning_rate', 0.001, 'epochs', 1, 'distributed', false, 'n_clients', 1)"
            f" FROM {dbserver.sequence_table(tasks)}"
        )
        cursor.execute("ANALYZE TABLE tasks, task_assignments, task_runs, clients")
        cursor.fetchall()
    return client_ids


async def _retrying(stats: AgentStats, exc: DBAPIError) -> None:
    """Count a deadlock or lock-wait timeout and back off a moment; re-raise anything else."""
    if mysql_error_code(exc) not in RETRYABLE:
        raise exc
    stats.retries += 1
    await asyncio.sleep(0.001 * random.random())


async def _agent(db: Database, stats: AgentStats, start: asyncio.Event) -> None:
    """Claim, then complete in a second transaction, until no pending task is left."""
    await start.wait()
    while True:
        t0 = time.perf_counter()
        try:
            async with db.begin() as conn:
                claim = await claim_next(conn, stats.client_id, CAPACITY)
        except DBAPIError as exc:
            await _retrying(stats, exc)
            continue
        t1 = time.perf_counter()
        if claim is None:
            stats.empty += 1
            async with db.connect() as conn:
                left = (await conn.execute(text("SELECT COUNT(*) FROM tasks WHERE status = 'pending'"))).scalar_one()
            if not left:
                return
            await asyncio.sleep(0.002)  # the rest are locked by agents claiming them right now
            continue
        stats.claim_ms.append((t1 - t0) * 1000)
        stats.claimed.append(claim.task_id)
        result = {"progress": 100.0, "epoch": 1, "step": 1, "metrics": {}, "samples_per_sec": None}
        while True:
            t2 = time.perf_counter()
            try:
                async with db.begin() as conn:
                    await update_task_fenced(conn, claim.task_id, claim.generation or 0, stats.client_id,
                                             {"status": "completed", "result": result})
            except Fenced:
                stats.fenced += 1
            except DBAPIError as exc:
                await _retrying(stats, exc)
                continue
            stats.complete_ms.append((time.perf_counter() - t2) * 1000)
            break


async def _baseline(db: Database, ids: int, rounds: int, out: list[float], start: asyncio.Event) -> None:
    """Bare primary-key UPDATE transactions (the same checkout, ping and commit as a claim)."""
    await start.wait()
    statement = text("UPDATE tasks SET priority = priority WHERE id = :id")
    for _ in range(rounds):
        t0 = time.perf_counter()
        async with db.begin() as conn:
            await conn.execute(statement, {"id": random.randint(1, ids)})
        out.append((time.perf_counter() - t0) * 1000)


async def _gather(coros: list[Coroutine[Any, Any, None]], start: asyncio.Event) -> float:
    """Start every coroutine at the same moment; the seconds until the last one ends."""
    tasks = [asyncio.create_task(c) for c in coros]
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


def _questions(cursor: Any) -> int:
    """The server's count of statements from clients (a round trip each) plus pings."""
    cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')")
    return sum(int(value) for _, value in cursor.fetchall())


async def _round_trips(url: str, client_id: str, n: int) -> tuple[float, float]:
    """Round trips per claim transaction and per completion transaction, one agent alone, measured by the server."""
    with dbserver.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tasks (type, requirements, status, created_at, updated_at, priority, config)"
            f" SELECT 'training', '{{}}', 'pending', NOW(), NOW(), 0, JSON_OBJECT('name', 'rt', 'distributed', false,"
            f" 'n_clients', 1) FROM {dbserver.sequence_table(n)}")
    db = create_database(url, pool_size=1)
    claims, completions = [], []
    try:
        await db.ping()
        with dbserver.connect(url) as meter, meter.cursor() as cursor:
            for _ in range(n):
                before = _questions(cursor)
                async with db.begin() as conn:
                    claim = await claim_next(conn, client_id, CAPACITY)
                middle = _questions(cursor)
                assert claim is not None
                async with db.begin() as conn:
                    await update_task_fenced(conn, claim.task_id, claim.generation or 0, client_id,
                                             {"status": "completed", "result": {}})
                after = _questions(cursor)
                claims.append(middle - before - 1)  # less the meter's own SHOW STATUS
                completions.append(after - middle - 1)
    finally:
        await db.dispose()
    return sum(claims) / n, sum(completions) / n


def _violations(url: str, n_tasks: int, stats: list[AgentStats]) -> tuple[int, str]:
    """Tasks not claimed exactly once, by the database's records and by what the agents were told."""
    told: dict[int, int] = {}
    for agent in stats:
        for task_id in agent.claimed:
            told[task_id] = told.get(task_id, 0) + 1
    told_twice = sum(1 for n in told.values() if n > 1)
    told_never = n_tasks - len(told)
    with dbserver.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM (SELECT task_id FROM task_assignments GROUP BY task_id HAVING COUNT(*) > 1) d")
        multi = int(cursor.fetchone()[0])
        cursor.execute("SELECT COUNT(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM task_assignments a WHERE a.task_id = t.id)")
        unassigned = int(cursor.fetchone()[0])
        cursor.execute("SELECT COUNT(*) FROM task_runs WHERE generation <> 1")
        regenerated = int(cursor.fetchone()[0])
        cursor.execute("SELECT COUNT(*) FROM tasks t LEFT JOIN task_runs r ON r.task_id = t.id WHERE r.task_id IS NULL")
        no_run = int(cursor.fetchone()[0])
        cursor.execute("SELECT COUNT(*) FROM tasks WHERE status <> 'completed'")
        not_done = int(cursor.fetchone()[0])
    total = told_twice + told_never + multi + unassigned + regenerated + no_run + not_done
    detail = (f"given to 2+ agents {told_twice}, never given {told_never}, tasks with 2+ assignments {multi}, "
              f"without assignment {unassigned}, generation <> 1 {regenerated}, without run {no_run}, "
              f"not completed {not_done}")
    return total, detail


async def _run(url: str, server: psutil.Process, agents: int, n_tasks: int, baseline_rounds: int) -> dict[str, Any]:
    """Set up, measure the baseline, drain the queue with every agent, and check the outcome."""
    client_ids = _setup(url, agents, n_tasks)
    dbs = [create_database(url, pool_size=1) for _ in client_ids]
    try:
        # Warm every agent's connection, then half of the bare round-trip baseline on the same connections.
        for db in dbs:
            await db.ping()
        base: list[float] = []
        start = asyncio.Event()
        await _gather([_baseline(db, n_tasks, baseline_rounds // 2, base, start) for db in dbs], start)

        stats = [AgentStats(cid) for cid in client_ids]
        me = psutil.Process()
        me.cpu_percent()
        server.cpu_percent()
        start = asyncio.Event()
        wall = await _gather([_agent(db, s, start) for db, s in zip(dbs, stats, strict=False)], start)
        client_cpu = me.cpu_percent()
        server_cpu = server.cpu_percent()
        start = asyncio.Event()  # the other half of the baseline after the drain, so both see similar conditions
        await _gather([_baseline(db, n_tasks, baseline_rounds - baseline_rounds // 2, base, start) for db in dbs], start)
    finally:
        for db in dbs:
            await db.dispose()
    violations, violation_detail = _violations(url, n_tasks, stats)
    claim_trips, completion_trips = await _round_trips(url, client_ids[0], 100)
    return {
        "wall": wall, "base": base, "stats": stats, "client_cpu": client_cpu, "server_cpu": server_cpu,
        "violations": violations, "violation_detail": violation_detail,
        "claim_trips": claim_trips, "completion_trips": completion_trips,
    }


def measure(quick: bool = False) -> list[Figure]:
    """Claims/s, claim latency, double claims and claim/bare-UPDATE latency ratio on a throwaway MariaDB."""
    agents, n_tasks, baseline_rounds = (8, 1_000, 100) if quick else (32, 10_000, 200)
    with dbserver.running() as server:
        url = dbserver.fresh_database(server, "bench_claims")
        out = asyncio.run(_run(url, dbserver.server_process(server), agents, n_tasks, baseline_rounds))
    stats: list[AgentStats] = out["stats"]
    claim_ms = [ms for s in stats for ms in s.claim_ms]
    complete_ms = [ms for s in stats for ms in s.complete_ms]
    claims = len(claim_ms)
    rate = claims / out["wall"]
    p50, p99 = dbserver.percentile(claim_ms, 50), dbserver.percentile(claim_ms, 99)
    base_p50 = dbserver.percentile(out["base"], 50)
    retries = sum(s.retries for s in stats)
    fenced = sum(s.fenced for s in stats)
    shared = (f"{agents} agents (asyncio tasks, one pool_size=1 engine each), {n_tasks:,} single tasks; "
              f"client and mariadbd share this {psutil.cpu_count()}-core machine: load generator "
              f"{out['client_cpu']:.0f}% CPU, mariadbd {out['server_cpu']:.0f}% (100% = one core)")
    per_agent = [len(s.claimed) for s in stats]
    server_ms = out["server_cpu"] / 100 * out["wall"] / max(1, claims) * 1000
    return [
        Figure("claims: drain rate, claim + completion per task", rate, "claims/s", f">= {TARGET_RATE:,.0f} claims/s",
               rate >= TARGET_RATE,
               f"{claims:,} claims in {out['wall']:.2f} s; each task claimed (claim_next) then completed "
               f"(update_task_fenced) in a second transaction; {shared}; claims per agent "
               f"{min(per_agent)}-{max(per_agent)}; {retries} deadlock/lock-wait retries, {fenced} fenced; mariadbd CPU "
               f"per task (claim + completion) {server_ms:.2f} ms, i.e. at most ~{1000 / server_ms:,.0f} tasks/s per "
               f"server core; the single Python load-generator process is the limit when it is near 100%"),
        Figure("claims: round trips per claim transaction", out["claim_trips"], "round trips", "<= 4",
               out["claim_trips"] <= 4,
               f"server's Questions + pings per transaction, 100 claims of single tasks by one agent alone; "
               f"completion transaction {out['completion_trips']:.1f}"),
        Figure("claims: mariadbd CPU per task (claim + completion)", server_ms, "ms", "<= 0.5 ms", server_ms <= 0.5,
               "server CPU time over the drain divided by tasks drained"),
        Figure("claims: claim transaction latency p50", p50, "ms", "reported", True,
               f"begin + claim_next + commit; completion transaction p50 "
               f"{dbserver.percentile(complete_ms, 50):.2f} ms"),
        Figure("claims: claim transaction latency p99", p99, "ms", "reported", True,
               f"max {max(claim_ms):.2f} ms; completion p99 {dbserver.percentile(complete_ms, 99):.2f} ms"),
        Figure("claims: double or missed claims", out["violations"], "violations", "0", out["violations"] == 0,
               out["violation_detail"]),
        Figure("claims: claim p50 / bare PK UPDATE p50", p50 / base_p50, "x", "reported", True,
               f"bare `UPDATE tasks SET priority=priority WHERE id=?` transaction p50 {base_p50:.2f} ms "
               f"(p99 {dbserver.percentile(out['base'], 99):.2f} ms), {len(out['base']):,} on the same "
               f"{agents} connections, all at once, half just before and half just after the drain"),
    ]


def main() -> None:
    """Run alone: python -m benchmarks.claims [--quick]."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claims")
    parser.add_argument("--quick", action="store_true", help="8 agents, 1,000 tasks")
    args = parser.parse_args()
    for figure in measure(quick=args.quick):
        print(figure.row(), flush=True)


if __name__ == "__main__":
    main()
