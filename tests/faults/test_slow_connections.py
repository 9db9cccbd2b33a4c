"""Slow and idle connections against a real agent limited to 256 open files: both servers and every loop survive."""

from __future__ import annotations

import http.client
import resource
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db.engine import create_database
from app.db.queries import clients as client_queries
from app.db.queries import farms as farm_queries
from app.db.schema import performance_metrics
from app.peerapi import auth
from tests.agent.harness import AgentProcess, wait_for
from tests.faults.test_adversarial import never_window
from tests.training.e2e import sync, upgraded

pytestmark = pytest.mark.faults

OPEN_FILES = 256
ATTACKERS = 500  # half to each port; half send nothing, half a partial head and then a byte now and then
CROWD_ADDRESSES = 50  # 400 connections from 127.0.1.1-50 (8 each) ...
GREEDY_ADDRESS = "127.0.1.200"  # ... and 100 from one address, beyond the per-address cap
HOLD_SECONDS = 12.0  # longer than the head deadline
DRIP_EVERY = 2.0


def limited(soft: int, hard: int) -> list[str]:
    """A command prefix that runs the rest under the given open-files limits."""
    return [sys.executable, "-c",
            (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
             "os.execv(sys.argv[1], sys.argv[1:])")]


async def _read(url: str, fn: object) -> object:
    db = create_database(url)
    try:
        async with db.connect() as conn:
            return await fn(conn)  # type: ignore[operator]
    finally:
        await db.dispose()


def _last_seen(url: str, client_id: str) -> datetime:
    row = sync(_read(url, lambda conn: client_queries.get_client(conn, client_id)))
    return row["last_seen"]  # type: ignore[index]


def _metric_rows(url: str, client_id: str) -> int:
    async def count(conn: object) -> int:
        query = select(func.count()).select_from(performance_metrics).where(performance_metrics.c.client_id == client_id)
        return int((await conn.execute(query)).scalar_one())  # type: ignore[attr-defined]
    return sync(_read(url, count))  # type: ignore[return-value]


@pytest.fixture
def many_files() -> Iterator[None]:
    """This test process may hold the attack's sockets and its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * ATTACKERS if hard == resource.RLIM_INFINITY else min(hard, 4 * ATTACKERS)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < ATTACKERS + 64:
        pytest.skip(f"this process may open only {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} files")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _dashboard_ok(agent: AgentProcess) -> dict:
    status = agent.api("/api/v1/status")
    assert status["client_id"] == agent.client_id
    return status


def _peer_ok(agent: AgentProcess, secret: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.peer_port, timeout=5)
    try:
        conn.request("GET", "/peer/v1/status", headers={"Authorization": auth.sign(secret, "GET", "/peer/v1/status", agent.client_id)})
        response = conn.getresponse()
        assert response.status == 200 and agent.client_id in response.read().decode()
    finally:
        conn.close()


def _open_attack(ports: tuple[int, int]) -> tuple[list[socket.socket], list[socket.socket]]:
    """ATTACKERS non-blocking connections from many loopback addresses; returns (silent, dripping)."""
    sources = [f"127.0.1.{1 + i % CROWD_ADDRESSES}" for i in range(ATTACKERS - 100)] + [GREEDY_ADDRESS] * 100
    silent: list[socket.socket] = []
    dripping: list[socket.socket] = []
    for i, source in enumerate(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", ports[i % 2]))
        (dripping if i % 4 >= 2 else silent).append(sock)
    time.sleep(0.5)
    for sock in dripping:
        _send(sock, b"GET /peer/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return silent, dripping


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError:
        pass  # not connected yet, or already closed by the agent


def test_agent_survives_slow_and_idle_connections_at_256_open_files(tmp_path: Path, many_files: None) -> None:
    """500 idle and half-sent connections: the dashboard and the peer API answer during and after them, the log
    stays short, and the heartbeat, metrics and every other loop keep running."""
    url = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    sync(upgraded(url))
    # soft = hard = 256 open files, so that raising the soft limit cannot help the agent
    agent = AgentProcess(tmp_path, "agent", "--database-url", url, prefix=limited(OPEN_FILES, OPEN_FILES),
                         env={"AIFARM_MDNS": "false", "AIFARM_SCHEDULE": never_window()})
    silent: list[socket.socket] = []
    dripping: list[socket.socket] = []
    try:
        secret = sync(_read(url, lambda conn: farm_queries.get_secret(conn, "default")))
        assert isinstance(secret, str)
        _dashboard_ok(agent)
        _peer_ok(agent, secret)
        log_lines = len(agent.log().splitlines())

        silent, dripping = _open_attack((urllib.parse.urlsplit(agent.url).port or 80, agent.peer_port))
        started = time.monotonic()
        while time.monotonic() - started < HOLD_SECONDS:
            _dashboard_ok(agent)  # answers while the attack's connections are open
            _peer_ok(agent, secret)
            for sock in dripping:
                _send(sock, b"a")
            time.sleep(DRIP_EVERY)
        for sock in silent + dripping:
            sock.close()
        closed_at = time.monotonic()
        status = _dashboard_ok(agent)
        _peer_ok(agent, secret)
        assert time.monotonic() - closed_at < 2.0

        counts = status["connections"]
        assert counts["refused_per_address"] > 0, counts  # the greedy address went beyond its cap
        assert counts["head_timeouts"] + counts["evicted"] > 0, counts
        grown = len(agent.log().splitlines()) - log_lines
        assert grown < 100, f"the log grew by {grown} lines:\n{agent.log()[-5000:]}"
        assert status["loops"] and set(status["loops"].values()) == {"running"}, status["loops"]

        seen, metrics = _last_seen(url, agent.client_id), _metric_rows(url, agent.client_id)
        wait_for(lambda: _last_seen(url, agent.client_id) > seen, 10, "a heartbeat after the attack")
        wait_for(lambda: _metric_rows(url, agent.client_id) > metrics, 15, "performance metrics after the attack")
        assert set(_dashboard_ok(agent)["loops"].values()) == {"running"}
    finally:
        for sock in silent + dripping:
            sock.close()
        agent.stop()


def test_agent_raises_its_open_files_limit_to_the_hard_limit(tmp_path: Path) -> None:
    """Started with a soft limit of 256 under a hard limit of 1024, the agent runs with 1024."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard open-files limit here is {hard}")
    agent = AgentProcess(tmp_path, "agent", prefix=limited(OPEN_FILES, 1024), env={"AIFARM_MDNS": "false"})
    try:
        limits = Path(f"/proc/{agent.proc.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        assert line.split()[3:5] == ["1024", "1024"], line
    finally:
        agent.stop()
