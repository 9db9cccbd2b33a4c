"""A bundle's recipe runs confined: each forbidden read, write and connection it tries fails, and the task trains."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from app.bundles import sandbox
from tests.agent.harness import AgentProcess, wait_for
from tests.bundles.helpers import aifarm, build_wheel, bundle_task, keygen, publish
from tests.training.e2e import submit, task, task_logs

pytestmark = pytest.mark.skipif(sandbox.available() is not None, reason=f"no sandbox here: {sandbox.available()}")


async def test_recipe_cannot_read_write_or_connect_outside_its_task(tmp_path: Path) -> None:
    """config.toml, api_token, the database, ~/.ssh and another task's folder stay out of reach; the task completes."""
    data_dir = tmp_path / "a"
    url = f"sqlite:///{data_dir / 'aifarm.sqlite3'}"
    aifarm(tmp_path, "db", "upgrade", "--data-dir", str(data_dir))
    (data_dir / "config.toml").write_text("idle_minutes = 7\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    other = data_dir / "checkpoints" / "task-999"
    other.mkdir(parents=True)
    (other / "regular-000000020.pt").write_bytes(b"another task's checkpoint")

    key, fingerprint = keygen(tmp_path)
    publish(tmp_path, url, data_dir, build_wheel(tmp_path / "dist"), key)
    aifarm(tmp_path, "bundles", "trust", fingerprint, "--data-dir", str(data_dir))

    agent = AgentProcess(tmp_path, "a", "--heartbeat-interval", "1s", env={"HOME": str(home)})
    try:
        dashboard_port = urlparse(agent.url).port
        forbidden_reads = [data_dir / "config.toml", data_dir / "api_token", data_dir / "aifarm.sqlite3",
                           home / ".ssh" / "id_ed25519", other / "regular-000000020.pt"]
        forbidden_writes = [data_dir / "planted.txt", other / "planted.txt", home / "planted.txt",
                            data_dir / "models" / "planted.txt"]
        probe = {"read": [str(p) for p in forbidden_reads], "list": [str(home / ".ssh"), str(other)],
                 "write": [str(p) for p in forbidden_writes], "connect": [dashboard_port, agent.peer_port]}
        task_id = submit(tmp_path, url, bundle_task("confined", "probe-recipes", probe=probe))
        wait_for(lambda: task(url, task_id)["status"] in ("completed", "failed", "error"), 180, "the bundle task")
        row = task(url, task_id)
        assert row["status"] == "completed", (row["error_log"], task_logs(url, task_id), agent.log())
    finally:
        agent.stop()

    results = json.loads((data_dir / "checkpoints" / f"task-{task_id}" / "probe.json").read_text())
    assert len(results) == len(forbidden_reads) + 2 + len(forbidden_writes) + 2
    allowed = [r for r in results if r["ok"]]
    assert not allowed, allowed
    for written in forbidden_writes:
        assert not written.exists()
    assert (other / "regular-000000020.pt").read_bytes() == b"another task's checkpoint"
