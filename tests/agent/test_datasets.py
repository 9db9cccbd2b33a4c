"""Published datasets with real agents: the shard swarm, a corrupted copy refused, and bad input refused."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.db.engine import create_database
from app.db.queries import datasets as dataset_queries
from app.db.queries import tasks as task_queries
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import read, submit, sync, task, task_logs, upgraded

FAST = ("--heartbeat-interval", "1s")
REPO = Path(__file__).resolve().parents[2]
SERVED = re.compile(r"served dataset shard (\S+)")
pytestmark = pytest.mark.slow


def aifarm(tmp_path: Path, url: str, agent: AgentProcess | None, *args: str) -> subprocess.CompletedProcess[str]:
    """A CLI command on the farm database (and an agent's data dir)."""
    where = ["--data-dir", str(agent.data_dir)] if agent is not None else []
    return subprocess.run([sys.executable, "-m", "app", *args, "--database-url", url, *where],
                          capture_output=True, text=True, env=agent_env(tmp_path), timeout=120)


def docs_folder(tmp_path: Path) -> Path:
    """The project's README and docs as one folder of text."""
    folder = tmp_path / "corpus"
    (folder / "docs").mkdir(parents=True)
    (folder / "README.md").write_bytes((REPO / "README.md").read_bytes())
    for doc in (REPO / "docs").glob("*.md"):
        (folder / "docs" / doc.name).write_bytes(doc.read_bytes())
    return folder


def lm_task(title: str, n_clients: int, **options: Any) -> dict[str, Any]:
    """A tiny char_lstm task on the published dataset `docs`."""
    return {"type": "training", "requirements": {"min_cpu_cores": 1}, "priority": 0, "config": {
        "name": title, "model": "char_lstm", "dataset": "published", "batch_size": 8, "learning_rate": 0.01,
        "epochs": 1, "max_steps": 4, "distributed": n_clients > 1, "n_clients": n_clients,
        "model_options": {"embedding": 8, "hidden": 16},
        "dataset_options": {"name": "docs", "seq_len": 32, **options}}}


def manifest_of(url: str, name: str = "docs") -> dict[str, Any]:
    """The stored manifest of the newest version of a dataset."""
    row = sync(read(url, dataset_queries.get, name, None))
    assert row is not None
    return dict(row.manifest)


def shards_match(folder: Path, manifest: dict[str, Any]) -> bool:
    """Every shard of the manifest lies in folder with its sha256."""
    return all((folder / s["name"]).is_file()
               and hashlib.sha256((folder / s["name"]).read_bytes()).hexdigest() == s["sha256"]
               for s in manifest["shards"])


def ended(url: str, task_id: int) -> str | None:
    """The task's status once it is over."""
    status = task(url, task_id)["status"]
    return status if status in ("completed", "failed", "error") else None


async def test_three_agents_share_shards_and_a_corrupted_copy_is_refused(tmp_path: Path, database_url: str) -> None:
    """The publisher serves each shard at most twice, every agent ends with the manifest's shards, and a shard
    altered on one peer is refused and fetched from another holder (SQLite and MariaDB)."""
    await upgraded(database_url)
    agents = [AgentProcess(tmp_path, name, "--database-url", database_url, *FAST) for name in ("a", "b", "c")]
    a, b, c = agents
    try:
        done = aifarm(tmp_path, database_url, a, "datasets", "publish", str(docs_folder(tmp_path)), "--name", "docs",
                      "--shard-size", "4k")
        assert done.returncode == 0, done.stderr
        manifest = manifest_of(database_url)
        shards = [s["name"] for s in manifest["shards"]]
        assert len(shards) >= 12
        task_id = submit(tmp_path, database_url, lm_task("swarm", 3))
        assert wait_for(lambda: ended(database_url, task_id), 300, "the 3-agent task to end") == "completed", \
            "\n".join(task_logs(database_url, task_id))
        folder = "datasets/published/docs/1"
        for agent in agents:
            assert shards_match(agent.data_dir / folder, manifest), agent.client_id
        served = Counter(SERVED.findall(a.log()))
        assert served and max(served.values()) <= 2, served
        sizes = {f"docs/1/{s['name']}": s["bytes"] for s in manifest["shards"]}
        share = sum(sizes[k] * n for k, n in served.items()) / (2 * sum(sizes.values()))
        print(f"publisher served {share:.2f} of the bytes the two other agents received")
        by_peers = len(SERVED.findall(b.log())) + len(SERVED.findall(c.log()))
        assert by_peers >= 1  # the other agents served each other too
        status, page = b.page(f"/tasks/{task_id}")  # the fetch's progress is on the task page
        assert status == 200 and "dataset docs v1: 25% fetched" in page and "fetched and verified" in page
        listed = aifarm(tmp_path, database_url, None, "datasets", "list", "--json")
        assert json.loads(listed.stdout)[0]["holders"] == 3

        # b's copy of one shard is altered; c forgets its copy; only c may claim the next task
        victim = b.data_dir / folder / shards[0]
        victim.write_bytes(bytes(len(victim.read_bytes())))
        for shard in shards:
            (c.data_dir / folder / shard).unlink()
        for agent in (a, b):
            assert aifarm(tmp_path, database_url, agent, "pause").returncode == 0
        second = submit(tmp_path, database_url, lm_task("again", 1))
        try:
            status = wait_for(lambda: ended(database_url, second), 90, "the task on c to end")
        except AssertionError:
            status = None
        assert status == "completed", "\n".join(task_logs(database_url, second)) + c.log()[-3000:]
        assert shards_match(c.data_dir / folder, manifest)
        logs = "\n".join(task_logs(database_url, second))
        assert f"shard {shards[0]} from {b.client_id} does not match its sha256; refused" in logs, logs
    finally:
        for agent in agents:
            agent.stop()


async def test_bad_dataset_input_is_refused_at_submit_or_ended_as_error_without_downloading(
        tmp_path: Path, sqlite_url: str) -> None:
    """Unknown dataset, a manifest that does not match its shards, a context longer than a shard: refused at
    submit naming the field; written straight into the database, ended as `error` with nothing downloaded."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST, "--farm-name", "default")
    try:
        corpus = docs_folder(tmp_path)
        assert aifarm(tmp_path, sqlite_url, None, "datasets", "publish", str(corpus), "--name", "x").returncode == 2
        assert "no agent has run" in aifarm(tmp_path, sqlite_url, None, "datasets", "publish", str(corpus),
                                            "--name", "x").stderr
        bad_name = aifarm(tmp_path, sqlite_url, a, "datasets", "publish", str(corpus), "--name", "no/slash")
        assert bad_name.returncode == 2 and bad_name.stderr.startswith("aifarm: error: dataset name")
        assert bad_name.stderr.count("\n") == 1
        bad_size = aifarm(tmp_path, sqlite_url, a, "datasets", "publish", str(corpus), "--name", "docs",
                          "--shard-size", "lots")
        assert bad_size.returncode == 2 and "--shard-size" in bad_size.stderr
        not_utf8 = tmp_path / "binary.txt"
        not_utf8.write_bytes(b"ok\xff\xfe")
        refused = aifarm(tmp_path, sqlite_url, a, "datasets", "publish", str(not_utf8), "--name", "bin")
        assert refused.returncode == 2 and "not UTF-8 text" in refused.stderr
        assert json.loads(aifarm(tmp_path, sqlite_url, None, "datasets", "list", "--json").stdout) == []

        done = aifarm(tmp_path, sqlite_url, a, "datasets", "publish", str(corpus), "--name", "docs",
                      "--shard-size", "4k")
        assert done.returncode == 0, done.stderr
        cases = [(lm_task("unknown", 1, name="nope"), "config.dataset_options.name: no published dataset 'nope'"),
                 (lm_task("long", 1, seq_len=5000), "config.dataset_options.seq_len: 5000 does not fit"),
                 (lm_task("old", 1, version=7), "config.dataset_options.name: no published dataset 'docs' version 7")]
        for spec, expected in cases:
            path = tmp_path / "task.json"
            path.write_text(json.dumps(spec))
            refused = aifarm(tmp_path, sqlite_url, a, "submit", str(path))
            assert refused.returncode != 0 and expected in refused.stderr, refused.stderr
        manifest = manifest_of(sqlite_url)
        manifest["shards"][1]["sha256"] = "0" * 64
        await _set_manifest(sqlite_url, manifest)
        path = tmp_path / "task.json"
        path.write_text(json.dumps(lm_task("tampered", 1)))
        refused = aifarm(tmp_path, sqlite_url, a, "submit", str(path))
        assert "config.dataset_options.name: dataset 'docs': shard shard-00001.bin here does not match" in refused.stderr
        manifest["shards"][1]["bytes"] += 2
        await _set_manifest(sqlite_url, manifest)
        refused = aifarm(tmp_path, sqlite_url, None, "submit", str(path))
        assert "its manifest does not match its shards" in refused.stderr, refused.stderr
        assert sync(read(sqlite_url, lambda conn: task_queries.list_tasks(conn)))[1] == 0  # nothing was written

        b = AgentProcess(tmp_path, "b", "--database-url", sqlite_url, *FAST)
        try:
            assert aifarm(tmp_path, sqlite_url, a, "pause").returncode == 0
            ids = [await _insert(sqlite_url, lm_task("direct-unknown", 1, name="nope")),
                   await _insert(sqlite_url, lm_task("direct-tampered", 1)),
                   await _insert(sqlite_url, lm_task("direct-long", 1, seq_len=5000))]
            for task_id in ids:
                assert wait_for(lambda t=task_id: ended(sqlite_url, t), 120, "the task to end") == "error"
                assert "config.dataset_options" in (task(sqlite_url, task_id)["error_log"] or "")
            assert not (b.data_dir / "datasets" / "published").exists()  # nothing downloaded
        finally:
            b.stop()
        shown = json.loads(aifarm(tmp_path, sqlite_url, None, "datasets", "show", "docs:1", "--json").stdout)
        assert shown["publisher_id"] == a.client_id and set(shown["holders"]["shard-00000.bin"]) == {a.client_id}
        missing = aifarm(tmp_path, sqlite_url, a, "datasets", "remove", "docs:2")
        assert missing.returncode == 2 and missing.stderr.startswith("aifarm: error: no published dataset 'docs:2'")
        removed = aifarm(tmp_path, sqlite_url, a, "datasets", "remove", "docs")
        assert removed.returncode == 0 and "removed dataset docs version 1" in removed.stdout, removed.stderr
        assert json.loads(aifarm(tmp_path, sqlite_url, None, "datasets", "list", "--json").stdout) == []
        assert not (a.data_dir / "datasets" / "published" / "docs" / "1").exists()
    finally:
        a.stop()


async def _set_manifest(url: str, manifest: dict[str, Any]) -> None:
    from sqlalchemy import update

    from app.db.schema import datasets

    db = create_database(url)
    try:
        async with db.begin() as conn:
            await conn.execute(update(datasets).values(manifest=manifest))
    finally:
        await db.dispose()


async def _insert(url: str, spec: dict[str, Any]) -> int:
    db = create_database(url)
    try:
        async with db.begin() as conn:
            return await task_queries.insert_task(conn, type="training", requirements=spec["requirements"],
                                                  config=spec["config"], priority=0)
    finally:
        await db.dispose()
