"""A network partition between agents on separate hosts (namespaces): the side without rank 0 re-elects, the cut-off
coordinator is fenced when it comes back, and the task is completed exactly once."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import models as model_queries
from tests.agent.harness import AgentProcess, wait_for
from tests.agent.test_multihost import Host, _farm_user, lan  # noqa: F401  (lan is a fixture)
from tests.mysql_server import start_server
from tests.training.e2e import mlp_task, read, run_state, submit, task, task_logs

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _veth_of(host: Host) -> str:
    """The bridge-side veth of a host (named afh<tag><index> by the lan fixture)."""
    return host.netns.replace("afns", "afh")


async def test_partitioned_coordinator_is_replaced_and_fenced(tmp_path: Path, lan: tuple[str, list[Host]]) -> None:  # noqa: F811
    """Cut rank 0's host off the LAN: the others re-elect and finish; once back, the old coordinator writes nothing."""
    gateway, hosts = lan
    server = start_server(bind_address=gateway)
    try:
        url = _farm_user(server, gateway.rsplit(".", 1)[0] + ".")
        db = create_database(url)
        await upgrade(db)
        await db.dispose()
        env = {"AIFARM_FAILURE_TIMEOUT": "3s"}
        agents = [AgentProcess(tmp_path, f"h{i}", "--database-url", url, "--heartbeat-interval", "1s", env=env,
                               prefix=host.prefix()) for i, host in enumerate(hosts)]
        try:
            task_id = submit(tmp_path, url, mlp_task("partition", n_clients=2, epochs=40, checkpoint="40 steps"))
            wait_for(lambda: any("regular checkpoint" in m for m in task_logs(url, task_id)), 120, "training")
            first = run_state(url, task_id)
            index = next(i for i, a in enumerate(agents) if a.client_id == first["coordinator_id"])
            subprocess.run(["ip", "link", "set", _veth_of(hosts[index]), "down"], check=True)
            try:
                wait_for(lambda: (run_state(url, task_id) or {}).get("coordinator_id")
                         not in (None, first["coordinator_id"]), 180, "a new coordinator on the other side")
                assert run_state(url, task_id)["generation"] > first["generation"]
                wait_for(lambda: task(url, task_id)["status"] in ("completed", "failed", "error"), 240, "the task to end")
            finally:
                subprocess.run(["ip", "link", "set", _veth_of(hosts[index]), "up"], check=True)
            assert task(url, task_id)["status"] == "completed"
            time.sleep(8)  # the old coordinator reconnects and tries to settle its attempt
            assert task(url, task_id)["status"] == "completed"
            versions = await read(url, model_queries.list_versions, "partition")
            assert len(versions) == 1  # completed once: one model version
            assert agents[index].proc.poll() is None  # the cut-off agent survived
        finally:
            for agent in agents:
                agent.stop()
    finally:
        server.stop()
