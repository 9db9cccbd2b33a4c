"""Two or more real agents against one MariaDB database: registration, discovery, liveness, outages, peer API auth."""

from __future__ import annotations

import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import clients as client_queries
from app.db.queries import farms as farm_queries
from app.db.queries import logs as log_queries
from app.peerapi import auth
from tests.agent.harness import AgentProcess, http_get, wait_for
from tests.mysql_server import start_server

FAST = ("--heartbeat-interval", "0.5s")


async def upgraded(url: str) -> None:
    """Create the schema."""
    db = create_database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def client_row(url: str, client_id: str) -> dict[str, Any] | None:
    """A client's row."""
    db = create_database(url)
    try:
        async with db.connect() as conn:
            return await client_queries.get_client(conn, client_id)
    finally:
        await db.dispose()


async def client_log_messages(url: str, client_id: str) -> list[str]:
    """A client's client_logs messages, oldest first."""
    db = create_database(url)
    try:
        async with db.connect() as conn:
            rows = await log_queries.recent_client_logs(conn, client_id, limit=500)
    finally:
        await db.dispose()
    return [row["message"] for row in reversed(rows)]


def verified_ids(agent: AgentProcess) -> set[str]:
    """Client ids the agent's API lists as verified peers."""
    return {p["client_id"] for p in agent.api("/api/v1/peers")["peers"] if p["verified"]}


def run(coro: Any) -> Any:
    """Run a coroutine to completion from a synchronous polling predicate (in its own thread and loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def test_two_agents_register_discover_and_leave(tmp_path: Path, mysql_url: str) -> None:
    """Both rows carry the inventory; each lists the other verified within 10 s; a clean stop is inactive at once."""
    await upgraded(mysql_url)
    a = AgentProcess(tmp_path, "a", "--database-url", mysql_url, *FAST)
    started_b = time.monotonic()
    b = AgentProcess(tmp_path, "b", "--database-url", mysql_url, *FAST)
    try:
        wait_for(lambda: b.client_id in verified_ids(a), 10, "A to verify B")
        wait_for(lambda: a.client_id in verified_ids(b), 10, "B to verify A")
        assert time.monotonic() - started_b < 10 + 5

        for agent in (a, b):
            row = await client_row(mysql_url, agent.client_id)
            assert row is not None and row["status"] == "active"
            assert row["cpu_info"]["logical_cores"] >= 1 and row["cpu_info"]["physical_cores"] >= 1
            assert "model" in row["cpu_info"] and "frequency_mhz" in row["cpu_info"]
            assert row["ram_info"]["total_mb"] > 0 and 0 < row["ram_info"]["available_mb"] <= row["ram_info"]["total_mb"]
            assert row["gpu_info"] == []
            session = row["session_info"]
            assert session["pid"] == agent.proc.pid and session["farm_name"] == "default"
            assert session["peer_port"] == agent.peer_port and session["dashboard_port"] > 0
            assert session["donation"] == "donating" and session["addresses"]
            assert row["version"] and row["hostname"]

        view = a.api("/api/v1/peers")
        peer_b = next(p for p in view["peers"] if p["client_id"] == b.client_id)
        assert peer_b["peer_port"] == b.peer_port and peer_b["source"] == "mdns"
        wait_for(lambda: next(p for p in a.api("/api/v1/peers")["peers"] if p["client_id"] == b.client_id)["reachable"],
                 10, "A to reach B's peer API")

        assert b.stop(signal.SIGINT) == 0
        row = await client_row(mysql_url, b.client_id)
        assert row is not None and row["status"] == "inactive"
        wait_for(lambda: b.client_id not in {p["client_id"] for p in a.api("/api/v1/peers")["peers"]}, 10,
                 "B to disappear from A's peers after its goodbye")
    finally:
        b.stop()
        a.stop()
    messages_a = await client_log_messages(mysql_url, a.client_id)
    assert any(m.startswith("agent started") for m in messages_a)
    assert any(f"peer {b.client_id} joined" in m for m in messages_a)
    assert any(f"peer {b.client_id} left" in m for m in messages_a)
    assert any(m == "agent stopped" for m in await client_log_messages(mysql_url, b.client_id))


async def test_killed_agent_goes_inactive_through_another_agents_sweep(tmp_path: Path, mysql_url: str) -> None:
    """kill -9 leaves the row active; the survivor's sweep marks it inactive after inactive_after."""
    await upgraded(mysql_url)
    env = {"AIFARM_INACTIVE_AFTER": "3s"}
    a = AgentProcess(tmp_path, "a", "--database-url", mysql_url, *FAST, env=env)
    b = AgentProcess(tmp_path, "b", "--database-url", mysql_url, *FAST, env=env)
    try:
        b.kill()
        assert (await client_row(mysql_url, b.client_id))["status"] == "active"
        killed = time.monotonic()
        wait_for(lambda: run(client_row(mysql_url, b.client_id))["status"] == "inactive", 15, "the sweep to mark B inactive")
        # Not at once: inactive_after (3 s) less the last heartbeat's age (0.5 s) and DATETIME's whole seconds.
        assert time.monotonic() - killed >= 1.0
        assert (await client_row(mysql_url, a.client_id))["status"] == "active"
    finally:
        a.stop()
    assert any("marked 1 client(s) inactive" in m for m in await client_log_messages(mysql_url, a.client_id))


async def test_agent_survives_database_restart(tmp_path: Path) -> None:
    """Stop the database server under a running agent: it keeps serving, says so, and heartbeats again afterwards."""
    server = start_server()
    try:
        url = server.url("ai_farm")
        await upgraded(url)
        a = AgentProcess(tmp_path, "a", "--database-url", url, *FAST)
        try:
            server.kill()
            wait_for(lambda: a.api("/healthz")["database_ok"] is False, 20, "the agent to report the outage")
            status, body = a.page("/")
            assert status == 200 and "unreachable" in body  # the dashboard still answers
            assert a.proc.poll() is None
            server.restart()
            restarted = time.time()
            wait_for(lambda: a.api("/healthz")["database_ok"] is True, 40, "the agent to reconnect")
            row = await client_row(url, a.client_id)
            assert row["status"] == "active"
            assert row["last_seen"].timestamp() >= int(restarted) - 1
        finally:
            assert a.stop() == 0
        log = a.log()
        assert "database unreachable" in log and "database reachable again" in log
        messages = await client_log_messages(url, a.client_id)
        assert any("database unreachable" in m for m in messages)  # buffered during the outage, written after
        assert any("reachable again" in m for m in messages)
    finally:
        server.stop()


async def test_peer_api_requires_the_farm_signature(tmp_path: Path, mysql_url: str) -> None:
    """No signature, a wrong one or one by a stranger: 401 and nothing served; a signature made with the farm
    secret by an active client: 200."""
    await upgraded(mysql_url)
    a = AgentProcess(tmp_path, "a", "--database-url", mysql_url)
    try:
        url = f"http://127.0.0.1:{a.peer_port}/peer/v1/status"
        status, body = http_get(url)
        assert status == 401 and a.client_id not in body
        wrong = auth.sign("not-the-secret", "GET", "/peer/v1/status", "intruder")
        status, body = http_get(url, {"Authorization": wrong})
        assert status == 401 and a.client_id not in body
        status, body = http_get(url, {"Authorization": "Bearer anything"})
        assert status == 401

        db = create_database(mysql_url)
        async with db.connect() as conn:
            secret = await farm_queries.get_secret(conn, "default")
        await db.dispose()
        assert secret
        stranger = auth.sign(secret, "GET", "/peer/v1/status", "someone")  # not a client of the farm
        assert http_get(url, {"Authorization": stranger})[0] == 401
        good = auth.sign(secret, "GET", "/peer/v1/status", a.client_id)
        status, body = http_get(url, {"Authorization": good})
        assert status == 200 and a.client_id in body
        stale = auth.sign(secret, "GET", "/peer/v1/status", a.client_id, now=time.time() - 3600)
        assert http_get(url, {"Authorization": stale})[0] == 401
    finally:
        a.stop()


async def test_other_farm_is_listed_but_never_verified(tmp_path: Path, mysql_url: str) -> None:
    """An agent of another farm name shows under other_farms, never as a verified peer."""
    await upgraded(mysql_url)
    a = AgentProcess(tmp_path, "a", "--database-url", mysql_url, *FAST)
    b = AgentProcess(tmp_path, "b", "--database-url", mysql_url, "--farm-name", "elsewhere", *FAST)
    try:
        wait_for(lambda: any(p["client_id"] == b.client_id for p in a.api("/api/v1/peers")["other_farms"]), 10,
                 "A to list B's farm")
        time.sleep(1.5)
        assert b.client_id not in verified_ids(a)
        assert b.client_id not in {p["client_id"] for p in a.api("/api/v1/peers")["peers"]}
    finally:
        b.stop()
        a.stop()


async def test_manual_peer_address_works_without_multicast(tmp_path: Path, sqlite_url: str) -> None:
    """With zeroconf off, a `peers` address still finds and verifies the other agent."""
    await upgraded(sqlite_url)
    b = AgentProcess(tmp_path, "b", "--database-url", sqlite_url, *FAST, env={"AIFARM_FARM_NAME": "manualfarm", "AIFARM_MDNS": "false"})
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST,
                     env={"AIFARM_FARM_NAME": "manualfarm", "AIFARM_PEERS": f"127.0.0.1:{b.peer_port}",
                          "AIFARM_MDNS": "false"})
    try:
        wait_for(lambda: b.client_id in verified_ids(a), 20, "A to verify B through its manual address")
        sources = {p["client_id"]: p["source"] for p in a.api("/api/v1/peers")["peers"]}
        assert sources[b.client_id] == "manual"
    finally:
        a.stop()
        b.stop()
