"""Agents on separate network hosts (network namespaces on a bridge) discover each other and reach each other's peer API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.db.engine import create_database
from app.db.migrate import upgrade
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.mysql_server import MysqlServer, start_server
from tests.training.e2e import mlp_task, submit, task, task_logs

SUBNET = "10.213.{}."


@dataclass
class Host:
    """One network namespace with one address on the test bridge."""

    netns: str
    address: str

    def prefix(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        return ["ip", "netns", "exec", self.netns]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"afprobe{uuid.uuid4().hex[:6]}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"this sandbox cannot create network namespaces: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture
def lan() -> Iterator[tuple[str, list[Host]]]:
    """A bridge with the host at .1 and three namespaces at .2-.4; everything is deleted afterwards."""
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:5]
    net = SUBNET.format(int(tag, 16) % 200 + 20)
    bridge = f"afbr{tag}"
    hosts: list[Host] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{net}1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for index in range(3):
            ns, outer, inner = f"afns{tag}{index}", f"afh{tag}{index}", f"afp{tag}{index}"
            _ip("netns", "add", ns)
            hosts.append(Host(ns, f"{net}{index + 2}"))
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{net}{index + 2}/24", "dev", inner)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", inner, "up")
        yield f"{net}1", hosts
    finally:
        for host in hosts:
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _farm_user(server: MysqlServer, network: str) -> str:
    """Create an account for agents on the test network; returns its URL for database ai_farm."""
    import pymysql

    conn = pymysql.connect(unix_socket=str(server.socket_path), user="root")
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE USER 'farm'@'{network}%' IDENTIFIED BY 'farm-pw'")
            cursor.execute(f"GRANT ALL ON ai_farm.* TO 'farm'@'{network}%'")
    finally:
        conn.close()
    return f"mysql://farm:farm-pw@{server.bind_address}:{server.port}/ai_farm"


def _peers(host: Host, agent: AgentProcess, tmp_path: Path) -> dict:
    """`aifarm peers --json` run on the agent's host."""
    done = subprocess.run(
        [*host.prefix(), sys.executable, "-m", "app", "peers", "--json", "--data-dir", str(agent.data_dir)],
        capture_output=True, text=True, env=agent_env(tmp_path), timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
async def test_three_hosts_discover_each_other_across_the_bridge(tmp_path: Path, lan: tuple[str, list[Host]]) -> None:
    """Three agents in three namespaces: each lists the other two as verified and reaches their peer APIs."""
    gateway, hosts = lan
    server = start_server(bind_address=gateway)
    try:
        if server.socket_path is None:
            pytest.skip("AIFARM_TEST_MYSQL_URL servers are not reachable from the test namespaces")
        url = _farm_user(server, gateway.rsplit(".", 1)[0] + ".")
        db = create_database(url)
        await upgrade(db)
        await db.dispose()

        agents = [
            AgentProcess(tmp_path, f"host{i}", "--database-url", url, "--heartbeat-interval", "0.5s", prefix=host.prefix())
            for i, host in enumerate(hosts)
        ]
        try:
            for host, agent in zip(hosts, agents, strict=False):
                others = {a.client_id for a in agents if a is not agent}

                def sees_all(host: Host = host, agent: AgentProcess = agent, others: set[str] = others) -> bool:
                    peers = _peers(host, agent, tmp_path)["peers"]
                    good = {p["client_id"] for p in peers if p["verified"] and p["reachable"]}
                    return others <= good

                wait_for(sees_all, 30, f"{agent.client_id} to verify and reach both other hosts")
            view = _peers(hosts[0], agents[0], tmp_path)
            addresses = {p["client_id"]: p["addresses"] for p in view["peers"]}
            assert addresses[agents[1].client_id] == [hosts[1].address]
            assert addresses[agents[2].client_id] == [hosts[2].address]

            # A distributed task across two of the hosts: gloo talks over the bridge, not loopback.
            task_id = submit(tmp_path, url, mlp_task("acrosshosts", n_clients=2, epochs=2))
            wait_for(lambda: task(url, task_id)["status"] in ("completed", "failed", "error"), 180,
                     "the distributed task across namespaces to end")
            row = task(url, task_id)
            assert row["status"] == "completed", row["error_log"]
            published = [m for m in task_logs(url, task_id) if m.startswith("rendezvous published at")]
            assert published and not published[0].split(" at ")[1].startswith("127."), published
        finally:
            for agent in agents:
                agent.stop()
    finally:
        server.stop()
