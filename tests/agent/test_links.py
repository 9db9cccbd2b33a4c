"""Two real agents measure the link between them over the peer API; `aifarm peers` shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.db.queries import links as link_queries
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import read, sync, upgraded

FAST = ("--heartbeat-interval", "1s")


def _links(url: str, ids: list[str]) -> list[link_queries.LinkRow]:
    return list(sync(read(url, link_queries.among, ids)))


@pytest.mark.slow
async def test_agents_measure_their_links_and_peers_shows_them(tmp_path: Path, sqlite_url: str) -> None:
    await upgraded(sqlite_url)
    env = {"AIFARM_LINK_PROBE_INTERVAL": "1s"}
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST, env=env)
    b = AgentProcess(tmp_path, "b", "--database-url", sqlite_url, *FAST, env=env)
    try:
        ids = [a.client_id, b.client_id]
        wait_for(lambda: len(_links(sqlite_url, ids)) == 2, 60, "both directions to be measured")
        for row in _links(sqlite_url, ids):
            assert {row.from_client, row.to_client} == set(ids)
            assert row.mbit_per_s > 0 and row.latency_ms > 0
        wait_for(lambda: any(link["client_id"] == b.client_id for link in a.api("/api/v1/peers")["links"]), 30,
                 "A's view to list its link to B")
        shown = subprocess.run([sys.executable, "-m", "app", "peers", "--data-dir", str(a.data_dir)],
                               capture_output=True, text=True, env=agent_env(tmp_path), timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "measured links from this agent:" in shown.stdout and "MBIT/S" in shown.stdout
        assert b.client_id in shown.stdout.split("measured links from this agent:")[1]
    finally:
        a.stop()
        b.stop()
