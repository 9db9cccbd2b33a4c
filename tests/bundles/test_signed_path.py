"""The signed path: a trusted bundle trains a two-machine task on agents in network namespaces; the second agent
fetched the wheel from a peer and verified it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bundles import sandbox
from app.db.engine import create_database
from app.db.migrate import upgrade
from tests.agent.harness import AgentProcess, wait_for
from tests.agent.test_multihost import Host, _farm_user, lan  # noqa: F401  (the fixture)
from tests.bundles.helpers import aifarm, build_wheel, bundle_task, keygen, publish
from tests.mysql_server import start_server
from tests.training.e2e import submit, task, task_logs

pytestmark = [pytest.mark.slow, pytest.mark.mysql]


async def test_trusted_bundle_trains_on_two_hosts(tmp_path: Path, lan: tuple[str, list[Host]]) -> None:  # noqa: F811
    """Both agents trust the key; the publisher serves the wheel, the other fetches and verifies it; the task ends."""
    if sandbox.available() is not None:
        pytest.skip(f"no sandbox here: {sandbox.available()}")
    gateway, hosts = lan
    server = start_server(bind_address=gateway)
    try:
        if server.socket_path is None:
            pytest.skip("AIFARM_TEST_MYSQL_URL servers are not reachable from the test namespaces")
        url = _farm_user(server, gateway.rsplit(".", 1)[0] + ".")
        db = create_database(url)
        await upgrade(db)
        await db.dispose()
        key, fingerprint = keygen(tmp_path)
        publisher_dir, other_dir = tmp_path / "host0", tmp_path / "host1"
        publish(tmp_path, url, publisher_dir, build_wheel(tmp_path / "dist"), key)
        for data_dir in (publisher_dir, other_dir):
            aifarm(tmp_path, "bundles", "trust", fingerprint, "--database-url", url, "--data-dir", str(data_dir))
        agents = [AgentProcess(tmp_path, f"host{i}", "--database-url", url, "--heartbeat-interval", "0.5s",
                               prefix=host.prefix()) for i, host in enumerate(hosts[:2])]
        try:
            task_id = submit(tmp_path, url, bundle_task("signed", "probe-recipes", n_clients=2))
            wait_for(lambda: task(url, task_id)["status"] in ("completed", "failed", "error"), 240,
                     "the two-host bundle task to end")
            row = task(url, task_id)
            assert row["status"] == "completed", (row["error_log"], task_logs(url, task_id), agents[1].log())
            assert row["config"]["bundle"] == "probe-recipes==1.0"
            fetched = (f"bundle probe-recipes==1.0: wheel fetched from peer {agents[0].client_id}; "
                       "its sha256 matches the signed manifest")
            assert fetched in agents[1].log()
            assert (other_dir / "bundles" / "probe-recipes-1.0" / "aifarm-bundle.json").is_file()
        finally:
            for agent in agents:
                agent.stop()
    finally:
        server.stop()
