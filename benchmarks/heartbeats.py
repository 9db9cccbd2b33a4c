"""Figure: heartbeat scale — how many simulated clients one MariaDB serves at the default 2 s heartbeat under 50% of a core."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomysql
import psutil
from pymysql.constants import CLIENT
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.config import SPECS
from app.db.autocommit import AutocommitConnection
from app.db.engine import MYSQL_INIT, Database, create_database
from app.db.queries.clients import touch_client
from benchmarks import dbserver
from benchmarks.common import Figure

CPU_LIMIT = 50.0  # % of one core
RATE_SHARE = 0.95  # of the target heartbeat rate
TARGET_CLIENTS = 10_000
IDLE_WINDOW = 3.0  # seconds of idle server CPU measured before the series
COUNTERS = ("Com_update", "Com_commit", "Com_rollback", "Com_admin_commands")
Sender = Callable[[str], Awaitable[None]]


@dataclass
class Level:
    """One step of the series: N clients heartbeating every `interval` seconds."""

    clients: int
    interval: float
    target_rate: float = 0.0
    achieved_rate: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    per_heartbeat: dict[str, float] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Below the CPU limit while achieving the rate."""
        return self.server_cpu < CPU_LIMIT and self.achieved_rate >= RATE_SHARE * self.target_rate


def _default_interval() -> float:
    """The agent's default heartbeat_interval in seconds."""
    return float(next(spec.default for spec in SPECS if spec.name == "heartbeat_interval"))


def _setup(url: str, clients: int) -> list[str]:
    """Insert `clients` active client rows in one INSERT … SELECT."""
    with dbserver.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO clients (id, cpu_info, ram_info, gpu_info, session_info, last_seen, status, version, hostname)"
            " SELECT CONCAT('sim-', LPAD(seq, 6, '0')),"
            " JSON_OBJECT('model', 'bench', 'physical_cores', 4, 'logical_cores', 8, 'mhz', 3000),"
            " JSON_OBJECT('total_mb', 16384, 'available_mb', 8192), JSON_ARRAY(), JSON_OBJECT('pid', seq),"
            " NOW(), 'active', 'bench', CONCAT('host-', seq)"
            f" FROM {dbserver.sequence_table(clients)}"
        )
        cursor.execute("ANALYZE TABLE clients")
        cursor.fetchall()
    return [f"sim-{i:06d}" for i in range(1, clients + 1)]


class Pacer:
    """Hands out heartbeat slots k at t0 + k/rate, round-robin over the clients."""

    def __init__(self, client_ids: list[str], rate: float) -> None:
        self.client_ids = client_ids
        self.rate = rate
        self.t0 = time.perf_counter()
        self.next = 0
        self.done = 0
        self.stop = False

    async def slot(self) -> str | None:
        """Wait until the next heartbeat is due; the client it belongs to, or None when stopped."""
        k = self.next
        self.next += 1
        delay = self.t0 + k / self.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return None if self.stop else self.client_ids[k % len(self.client_ids)]


async def _worker(send: Sender, pacer: Pacer, latency: list[float]) -> None:
    """Send heartbeats when due until the pacer stops."""
    while True:
        client_id = await pacer.slot()
        if client_id is None:
            return
        t0 = time.perf_counter()
        await send(client_id)
        latency.append((time.perf_counter() - t0) * 1000)
        pacer.done += 1


class Generator:
    """Opens `workers` senders and closes them."""

    name = ""

    async def open(self, workers: int) -> list[Sender]:
        """One sender per worker."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close every connection."""


class AgentGenerator(Generator):
    """The agent's own path: Heartbeat's held autocommit connection and touch_client (one UPDATE per heartbeat)."""

    name = "agent path (SQLAlchemy autocommit connection + touch_client)"

    def __init__(self, url: str) -> None:
        self.url = url
        self.db: Database | None = None
        self.held: list[AutocommitConnection] = []

    async def open(self, workers: int) -> list[Sender]:
        """One held autocommit connection per worker, as each agent holds one."""
        self.db = db = create_database(self.url, pool_size=workers)
        self.held = [AutocommitConnection(db) for _ in range(workers)]

        def sender(held: AutocommitConnection) -> Sender:
            async def send(client_id: str) -> None:
                """One heartbeat as the agent sends it."""
                if not await held.run(lambda conn: touch_client(conn, client_id)):
                    raise RuntimeError(f"client {client_id} is missing")
            return send

        return [sender(held) for held in self.held]

    async def close(self) -> None:
        """Give the connections back and dispose of the pool."""
        for held in self.held:
            await held.close()
        if self.db is not None:
            await self.db.dispose()


class ReplayGenerator(Generator):
    """A lighter load generator: the exact round trips of the agent path, replayed on bare aiomysql connections.

    touch_client runs once through SQLAlchemy to capture the UPDATE it compiles to; each heartbeat then sends that
    UPDATE alone on an autocommit connection, so the server sees the same commands as from the agent.
    """

    name = "replay (same statements on bare aiomysql)"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: list[aiomysql.Connection] = []

    async def _capture(self, client_id: str) -> tuple[str, tuple[Any, ...], int]:
        """touch_client's UPDATE as sent, its parameters, and which parameter is the client id."""
        db = create_database(self.url, pool_size=1)
        seen: list[tuple[str, Any]] = []
        event.listen(db.engine.sync_engine, "before_cursor_execute",
                     lambda _c, _cur, statement, params, _ctx, _many: seen.append((statement, params)))
        try:
            async with db.begin() as conn:
                await touch_client(conn, client_id)
        finally:
            await db.dispose()
        statement, params = next((st, p) for st, p in seen if st.lstrip().upper().startswith("UPDATE"))
        return statement, tuple(params), list(params).index(client_id)

    async def open(self, workers: int) -> list[Sender]:
        """One connection per worker."""
        statement, params, where = await self._capture("sim-000001")
        url = make_url(self.url)
        senders = []
        for _ in range(workers):
            conn = await aiomysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                                          password=url.password or "", db=url.database, charset="utf8mb4",
                                          autocommit=True, init_command=MYSQL_INIT,
                                          client_flag=CLIENT.FOUND_ROWS)  # as SQLAlchemy's dialect: rowcount = matched
            self.conns.append(conn)
            senders.append(self._sender(conn, statement, params, where))
        return senders

    @staticmethod
    def _sender(conn: aiomysql.Connection, statement: str, params: tuple[Any, ...], where: int) -> Sender:
        """A sender on one connection."""
        async def send(client_id: str) -> None:
            """The UPDATE, autocommitted."""
            args = list(params)
            args[where] = client_id
            async with conn.cursor() as cursor:
                if await cursor.execute(statement, args) != 1:
                    raise RuntimeError(f"client {client_id} is missing")

        return send

    async def close(self) -> None:
        """Close the connections."""
        for conn in self.conns:
            conn.close()


async def _level(url: str, server: psutil.Process, client_ids: list[str], level: Level, generator: Generator,
                 workers: int, warmup: float, window: float) -> None:
    """Run one level: warm up, then measure rate, server CPU and command counters over the window."""
    level.target_rate = level.clients / level.interval
    me = psutil.Process()
    senders = await generator.open(workers)
    try:
        pacer = Pacer(client_ids[: level.clients], level.target_rate)
        latency: list[float] = []
        tasks = [asyncio.create_task(_worker(send, pacer, latency)) for send in senders]
        await asyncio.sleep(warmup)
        with dbserver.connect(url) as status:
            before, done0 = {n: dbserver.global_status(status, n) for n in COUNTERS}, pacer.done
            server.cpu_percent()
            me.cpu_percent()
            t0 = time.perf_counter()
            start = len(latency)
            await asyncio.sleep(window)
            after, done1 = {n: dbserver.global_status(status, n) for n in COUNTERS}, pacer.done
            elapsed = time.perf_counter() - t0
            level.server_cpu = server.cpu_percent()
            level.client_cpu = me.cpu_percent()
            level.latency_ms = latency[start:]
        pacer.stop = True
        await asyncio.gather(*tasks)
    finally:
        await generator.close()
    beats = done1 - done0
    level.achieved_rate = beats / elapsed
    level.per_heartbeat = {n: (after[n] - before[n]) / beats if beats else float("nan") for n in COUNTERS}


async def _series(url: str, server: psutil.Process, client_ids: list[str], series: list[int], interval: float,
                  generator: Generator, workers: int, warmup: float, window: float) -> list[Level]:
    """Rising N until a level fails."""
    levels = []
    for n in series:
        level = Level(n, interval)
        await _level(url, server, client_ids, level, generator, workers, warmup, window)
        levels.append(level)
        print(f"  {generator.name}: {n:>6,} clients: {level.achieved_rate:,.0f}/{level.target_rate:,.0f} heartbeats/s, "
              f"mariadbd {level.server_cpu:.1f}% CPU, load generator {level.client_cpu:.0f}%", flush=True)
        if not level.ok:
            break  # a rising series: larger N only does worse
    return levels


def _summary(levels: list[Level], series: list[int]) -> tuple[int, str]:
    """The largest passing N, and the series with why it stopped."""
    best = max((lv.clients for lv in levels if lv.ok), default=0)
    steps = "; ".join(f"{lv.clients:,}: {lv.achieved_rate:,.0f}/{lv.target_rate:,.0f}/s, mariadbd {lv.server_cpu:.1f}%, "
                      f"generator {lv.client_cpu:.0f}%, p50 {dbserver.percentile(lv.latency_ms, 50):.1f} ms"
                      for lv in levels)
    failed = next((lv for lv in levels if not lv.ok), None)
    if failed is not None:
        reasons = []
        if failed.server_cpu >= CPU_LIMIT:
            reasons.append(f"mariadbd at {failed.server_cpu:.0f}% CPU")
        if failed.achieved_rate < RATE_SHARE * failed.target_rate:
            reasons.append(f"only {failed.achieved_rate:,.0f} of {failed.target_rate:,.0f} heartbeats/s "
                           f"(load generator at {failed.client_cpu:.0f}% CPU)")
        steps += f"; stopped at {failed.clients:,}: {', '.join(reasons)}"
    elif best >= max(series):
        steps += "; the largest N tried passed (the limit is higher)"
    return best, steps


def _cost(levels: list[Level]) -> str:
    """Load-generator and server CPU per heartbeat at the highest level run."""
    top = levels[-1]
    per = 1000 / 100 / max(top.achieved_rate, 1e-9)
    return f"{top.client_cpu * per:.2f} ms generator CPU and {top.server_cpu * per:.2f} ms mariadbd CPU per heartbeat"


async def _run(url: str, server: psutil.Process, series: list[int], interval: float, workers: int, warmup: float,
               window: float) -> dict[str, Any]:
    """The server's idle CPU, then the series with each generator."""
    client_ids = _setup(url, max(series))
    server.cpu_percent()
    await asyncio.sleep(IDLE_WINDOW)
    out: dict[str, Any] = {"idle": server.cpu_percent()}
    for generator in (ReplayGenerator(url), AgentGenerator(url)):
        out[generator.name] = await _series(url, server, client_ids, series, interval, generator, workers, warmup, window)
    return out


def measure(quick: bool = False) -> list[Figure]:
    """Largest N clients below 50% of a core at the default heartbeat interval, and writes per heartbeat."""
    series = [500, 1_000] if quick else [1_000, 2_500, 5_000, 7_500, 10_000, 12_500, 15_000]
    workers, warmup, window = 16, 2.0, 10.0
    interval = _default_interval()
    with dbserver.running() as server:
        url = dbserver.fresh_database(server, "bench_heartbeats")
        runs = asyncio.run(_run(url, dbserver.server_process(server), series, interval, workers, warmup, window))
    replay, agent = runs[ReplayGenerator.name], runs[AgentGenerator.name]
    best, steps = _summary(replay, series)
    agent_best, agent_steps = _summary(agent, series)
    setting = (f"every {interval:g} s (default heartbeat_interval), one transaction each, {workers} asyncio workers "
               f"(connections); mariadbd CPU over a {window:g} s window (100% = one core); a level passes at < "
               f"{CPU_LIMIT:g}% with >= {RATE_SHARE:.0%} of N/{interval:g} heartbeats/s; the load generator (one "
               f"Python process) shares the {psutil.cpu_count()} cores with the server; idle mariadbd "
               f"{runs['idle']:.1f}% CPU")
    writes = max(lv.per_heartbeat["Com_update"] for lv in replay + agent)
    agent_counts = ", ".join(f"{n} {agent[-1].per_heartbeat[n]:.2f}" for n in COUNTERS)
    return [
        Figure("heartbeats: simulated clients under 50% of one core", best, "clients", f">= {TARGET_CLIENTS:,} clients",
               best >= TARGET_CLIENTS,
               f"{setting}; generator: {ReplayGenerator.name}, the agent path's exact commands (touch_client's "
               f"UPDATE alone, autocommitted) at {_cost(replay)} so that the server, not Python, is the "
               f"limit; series {steps}"),
        Figure("heartbeats: simulated clients, agent-path generator", agent_best, "clients", "reported", True,
               f"the same through the agent's held autocommit connection and touch_client, as the agent runs it, at {_cost(agent)}; "
               f"where the generator's CPU is the limit this is not the server's; series {agent_steps}"),
        Figure("heartbeats: database writes per heartbeat", writes, "statements", "1", round(writes, 2) <= 1.0,
               f"Com_update delta / heartbeats in the window (highest of all levels); agent path per heartbeat: "
               f"{agent_counts} (one round trip: no checkout ping, COMMIT or reset ROLLBACK)"),
    ]


def main() -> None:
    """Run alone: python -m benchmarks.heartbeats [--quick]."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heartbeats")
    parser.add_argument("--quick", action="store_true", help="500 and 1,000 clients")
    args = parser.parse_args()
    for figure in measure(quick=args.quick):
        print(figure.row(), flush=True)


if __name__ == "__main__":
    main()
