"""Bundles this machine must not run stay pending here, with the reason in the task's log and the agent's log:
an untrusted key, a wheel changed after signing, a manifest signed by another key, a revoked version."""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.parse
from pathlib import Path

from tests.agent.harness import AgentProcess, wait_for
from tests.bundles.helpers import aifarm, build_wheel, bundle_task, keygen, publish
from tests.training.e2e import submit, task, task_logs


def _forge(db_file: Path, name: str, fingerprint: str, public_key: str) -> None:
    """What an attacker with database access does: claim a trusted key for a manifest another key signed."""
    conn = sqlite3.connect(db_file)
    try:
        manifest = json.loads(conn.execute("SELECT manifest FROM bundles WHERE name = ?", (name,)).fetchone()[0])
        manifest["key"] = fingerprint
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        conn.execute("UPDATE bundles SET manifest = ?, key_fingerprint = ?, public_key = ? WHERE name = ?",
                     (text, fingerprint, public_key, name))
        conn.commit()
    finally:
        conn.close()


async def test_untrusted_altered_forged_and_revoked_bundles_are_refused(tmp_path: Path) -> None:
    """Each task stays pending (never failed), its log says why, and no bundle environment is created."""
    data_dir = tmp_path / "a"
    db_file = data_dir / "aifarm.sqlite3"
    url = f"sqlite:///{db_file}"
    aifarm(tmp_path, "db", "upgrade", "--data-dir", str(data_dir))
    trusted_key, trusted = keygen(tmp_path, "trusted")
    other_key, _ = keygen(tmp_path, "other")
    stranger_key, stranger = keygen(tmp_path, "stranger")
    dist = tmp_path / "dist"
    publish(tmp_path, url, data_dir, build_wheel(dist, "trusted-recipes"), trusted_key)
    aifarm(tmp_path, "bundles", "trust", trusted, "--data-dir", str(data_dir))
    public_key = sqlite3.connect(db_file).execute("SELECT public_key FROM bundles").fetchone()[0]

    publish(tmp_path, url, data_dir, build_wheel(dist, "stranger-recipes"), stranger_key)
    publish(tmp_path, url, data_dir, build_wheel(dist, "altered-recipes"), trusted_key)
    publish(tmp_path, url, data_dir, build_wheel(dist, "forged-recipes"), other_key)
    publish(tmp_path, url, data_dir, build_wheel(dist, "revoked-recipes"), trusted_key)
    tasks = {name: submit(tmp_path, url, bundle_task(name, f"{name}-recipes"))
             for name in ("stranger", "altered", "forged", "revoked")}

    served = next((data_dir / "bundles" / "wheels" / "altered-recipes-1.0").glob("*.whl"))
    served.write_bytes(served.read_bytes() + b"\0")  # changed after signing
    _forge(db_file, "forged-recipes", trusted, public_key)
    done = aifarm(tmp_path, "bundles", "revoke", "revoked-recipes==1.0", "--key", str(other_key),
                  "--data-dir", str(data_dir), check=False)
    assert done.returncode != 0 and "aifarm: error: bundle revoked-recipes==1.0 was signed by key" in done.stderr
    aifarm(tmp_path, "bundles", "revoke", "revoked-recipes==1.0", "--key", str(trusted_key), "--data-dir", str(data_dir))

    agent = AgentProcess(tmp_path, "a", "--heartbeat-interval", "1s")
    try:
        expected = {
            "stranger": f"is signed by key {stranger} (Test Lab), which this machine does not trust; "
                        f"to run it: aifarm bundles trust {stranger}",
            "altered": "refused: its wheel does not match the signed sha256 (changed after signing)",
            "forged": "refused: its manifest's signature does not verify with the trusted key",
            "revoked": "is revoked",
        }
        for name, text in expected.items():
            def refused(name: str = name, text: str = text) -> bool:
                return any(text in line for line in task_logs(url, tasks[name]))

            wait_for(refused, 60, f"the {name} bundle's refusal in its task log")
        log = agent.log()
        assert "bundle altered-recipes==1.0 refused: its wheel does not match the signed sha256" in log
        assert "bundle forged-recipes==1.0 refused: its manifest's signature does not verify" in log
        assert "bundle revoked-recipes==1.0 refused: it is revoked; not installed" in log
        status, page = agent.page(f"/tasks/{tasks['stranger']}")
        assert status == 200 and f"aifarm bundles trust {stranger}" in page
        for task_id in tasks.values():
            assert task(url, task_id)["status"] == "pending"
        installed = [p.name for p in (data_dir / "bundles").iterdir() if p.name != "wheels"]
        assert installed == []

        # The volunteer trusts the stranger's key on the Settings page: its task is claimed and trains.
        status, settings = agent.page("/settings")
        row = settings.split(f'data-bundle-key="{stranger}"', 1)[1].split("</tr>", 1)[0]
        assert status == 200 and "Test Lab" in row and "stranger-recipes==1.0" in row and "model.probe_linear" in row
        assert "Trust this key" in row
        token = re.search(r'name="csrf_token" value="([^"]+)"', settings)
        assert token is not None
        form = urllib.parse.urlencode({"csrf_token": token.group(1), "fingerprint": stranger}).encode()
        agent._browser.open(agent.url.rstrip("/") + "/settings/bundles/trust", data=form, timeout=10).close()
        wait_for(lambda: task(url, tasks["stranger"])["status"] in ("completed", "failed", "error"), 120,
                 "the stranger's task after its key was trusted")
        assert task(url, tasks["stranger"])["status"] == "completed"
        for name in ("altered", "forged", "revoked"):
            assert task(url, tasks[name])["status"] == "pending"
    finally:
        agent.stop()
