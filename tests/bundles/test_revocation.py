"""A bundle revoked while its task trains: the agent stops the task at the next step and deletes the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bundles import sandbox
from tests.agent.harness import AgentProcess, wait_for
from tests.bundles.helpers import aifarm, build_wheel, bundle_task, keygen, publish
from tests.training.e2e import run_state, submit, task

pytestmark = pytest.mark.skipif(sandbox.available() is not None, reason=f"no sandbox here: {sandbox.available()}")


async def test_revoked_bundle_stops_its_running_task_and_is_removed(tmp_path: Path) -> None:
    """Revoked mid-run: the task ends as error naming the revocation, and bundles/NAME-VERSION/ is gone."""
    data_dir = tmp_path / "a"
    url = f"sqlite:///{data_dir / 'aifarm.sqlite3'}"
    aifarm(tmp_path, "db", "upgrade", "--data-dir", str(data_dir))
    key, fingerprint = keygen(tmp_path)
    publish(tmp_path, url, data_dir, build_wheel(tmp_path / "dist"), key)
    aifarm(tmp_path, "bundles", "trust", fingerprint, "--data-dir", str(data_dir))
    long_task = bundle_task("long", "probe-recipes")
    long_task["config"].update({"epochs": 10_000, "checkpoint_interval": "50 steps"})
    agent = AgentProcess(tmp_path, "a", "--heartbeat-interval", "1s")
    try:
        task_id = submit(tmp_path, url, long_task)
        env = data_dir / "bundles" / "probe-recipes-1.0"
        wait_for(lambda: ((task(url, task_id)["result"] or {}).get("step") or 0) > 0 and env.is_dir(), 120,
                 "the bundle task to train")
        aifarm(tmp_path, "bundles", "revoke", "probe-recipes==1.0", "--key", str(key), "--data-dir", str(data_dir))
        wait_for(lambda: task(url, task_id)["status"] != "running", 60, "the revoked task to stop")
        row = task(url, task_id)
        assert row["status"] == "error", row
        assert "bundle probe-recipes==1.0 was revoked by its publisher" in (row["error_log"] or "")
        assert run_state(url, task_id) is not None
        wait_for(lambda: "bundle probe-recipes==1.0 was revoked; its environment was removed" in agent.log(), 30,
                 "the revoked bundle's environment to be removed")
        assert not env.exists()
    finally:
        agent.stop()
