"""A task never reads a volunteer's files outside dataset_dirs nor probes their network: refused at submit (real
CLI), refused again by the agent for a task written straight into the database, and no byte of a file reaches
the database; downloads fail with one text whatever the cause; the organiser's dataset-hosts command."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import tasks as task_queries
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.operations import db_snapshot
from tests.training.e2e import add_dataset_host, sync, task, task_logs, upgraded

pytestmark = pytest.mark.faults

FAST = ("--heartbeat-interval", "1s")
BASE = {"batch_size": 8, "learning_rate": 0.01, "epochs": 1, "distributed": False, "n_clients": 1, "max_attempts": 1}


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=agent_env(tmp_path, env), timeout=60)


def _submit(tmp_path: Path, url: str, spec: dict[str, Any], dirs: str = "") -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"task-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(spec))
    return _cli(tmp_path, "submit", str(path), "--database-url", url, env={"AIFARM_DATASET_DIRS": dirs})


def _spec(name: str, model: str, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"type": "training", "requirements": {}, "priority": 0,
            "config": {"name": name, "model": model, "dataset": dataset, **BASE, "dataset_options": options}}


def _all_text(url: str) -> str:
    """Every row of every table, as one text."""
    async def read() -> Any:
        db = create_database(url)
        try:
            return await db_snapshot(db)
        finally:
            await db.dispose()

    return json.dumps(sync(read()), default=str)


def _count_tasks(url: str) -> int:
    return len(json.loads(_all_text(url)).get("tasks", []))


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, Path | str]:
    """An allowed folder with a good csv, a private file holding a marker, and links from the allowed folder to it."""
    allowed, private = tmp_path / "datasets", tmp_path / "private"
    allowed.mkdir()
    private.mkdir()
    marker = f"SECRET-{uuid.uuid4().hex}"
    secret = private / "secret.csv"
    secret.write_text(f"{marker},{marker}b\n" + "".join(f"{i},{marker}{i % 2}\n" for i in range(20)))
    (allowed / "link.csv").symlink_to(secret)
    (allowed / "private-dir").symlink_to(private)
    (allowed / "good.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    return {"allowed": allowed, "private": private, "secret": secret, "marker": marker}


def test_sources_outside_dataset_dirs_are_refused_at_submit(tmp_path: Path, sqlite_url: str,
                                                            planted: dict[str, Any]) -> None:
    """csv/text/mnist paths outside dataset_dirs (a data dir's api_token, a symlink out) are refused, the field named."""
    sync(upgraded(sqlite_url))
    data_dir = tmp_path / "agent"
    assert _cli(tmp_path, "config", "--data-dir", str(data_dir)).returncode == 0
    token = data_dir / "api_token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("token-" + uuid.uuid4().hex)
    allowed = str(planted["allowed"])
    cases = [
        (_spec("c1", "mlp", "csv", {"source": str(token), "label_column": "y"}), "source", str(token)),
        (_spec("c2", "mlp", "csv", {"source": f"{allowed}/link.csv", "label_column": "y"}), "source", f"{allowed}/link.csv"),
        (_spec("c3", "mlp", "csv", {"source": f"{allowed}/../private/secret.csv", "label_column": "y"}), "source",
         f"{allowed}/../private/secret.csv"),
        (_spec("t1", "char_lstm", "text", {"source": str(token)}), "source", str(token)),
        (_spec("t2", "char_lstm", "text", {"source": f"{allowed}/private-dir/secret.csv"}), "source",
         f"{allowed}/private-dir/secret.csv"),
        (_spec("m1", "cnn", "mnist", {"images": str(planted["secret"]), "labels": f"{allowed}/good.csv"}), "images",
         str(planted["secret"])),
    ]
    for spec, field, path in cases:
        done = _submit(tmp_path, sqlite_url, spec, dirs=allowed)
        assert done.returncode != 0, spec
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aifarm: error: "), done.stderr
        assert f"config.dataset_options.{field}: {path} is not allowed: it is outside every folder of dataset_dirs" \
            in lines[0], lines[0]
        assert planted["marker"] not in done.stderr and token.read_text() not in done.stderr
    # without dataset_dirs even the good file is refused; with it, it is accepted
    good = _spec("ok", "mlp", "csv", {"source": f"{allowed}/good.csv", "label_column": "y"})
    refused = _submit(tmp_path, sqlite_url, good)
    assert refused.returncode != 0 and "no dataset_dirs are set" in refused.stderr
    assert _count_tasks(sqlite_url) == 0
    assert _submit(tmp_path, sqlite_url, good, dirs=allowed).returncode == 0
    assert _count_tasks(sqlite_url) == 1


def test_urls_are_refused_at_submit_unless_on_the_farm_allowlist(tmp_path: Path, sqlite_url: str) -> None:
    """A URL's host must be on the farm's dataset hosts; loopback and link-local are refused even when listed."""
    sync(upgraded(sqlite_url))
    sha = "ab" * 32
    spec = lambda url: _spec("u", "mlp", "csv", {"source": url, "sha256": sha, "label_column": "y"})  # noqa: E731
    done = _submit(tmp_path, sqlite_url, spec("http://files.lan/d.csv"))
    assert done.returncode != 0
    assert "config.dataset_options.source: http://files.lan/d.csv is not allowed: files.lan is not one of the farm's " \
           "dataset hosts" in done.stderr
    for host in ("files.lan", "127.0.0.1", "169.254.169.254", "localhost"):
        assert _cli(tmp_path, "farm", "dataset-hosts", "add", host, "--database-url", sqlite_url).returncode == 0
    assert _submit(tmp_path, sqlite_url, spec("http://files.lan/d.csv")).returncode == 0
    for url, why in (("http://127.0.0.1:8000/d.csv", "127.0.0.1 is a loopback address"),
                     ("http://169.254.169.254/latest", "169.254.169.254 is a link-local address"),
                     ("http://localhost/d.csv", "localhost is this machine")):
        done = _submit(tmp_path, sqlite_url, spec(url))
        assert done.returncode != 0 and f"config.dataset_options.source: {url} is not allowed: {why}" in done.stderr
    assert _count_tasks(sqlite_url) == 1


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server that would answer anything; the paths it was asked for."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            """Answer 200 and remember the path."""
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet."""

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield int(httpd.server_address[1]), hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tasks_written_into_the_database_are_refused_by_the_agent(tmp_path: Path, sqlite_url: str,
                                                                 planted: dict[str, Any],
                                                                 loopback_server: tuple[int, list[str]]) -> None:
    """Straight into the database: outside paths end as error without a byte of the file in any table; URLs to a
    listed loopback host or an unlisted host fail with the same text, and nothing is requested from the server."""
    port, hits = loopback_server
    sync(upgraded(sqlite_url))
    sync(add_dataset_host(sqlite_url, "127.0.0.1"))
    allowed = planted["allowed"]
    agent = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST,
                         env={"AIFARM_MDNS": "false", "AIFARM_PEER_HOST": "127.0.0.1",
                              "AIFARM_DATASET_DIRS": str(allowed)})
    try:
        token = agent.api_token
        sha = "ab" * 32
        configs = {
            "token": ("mlp", "csv", {"source": str(agent.data_dir / "api_token"), "label_column": "y"}),
            "link": ("mlp", "csv", {"source": str(allowed / "link.csv"), "label_column": "y"}),
            "dotdot": ("char_lstm", "text", {"source": f"{allowed}/../private/secret.csv", "seq_len": 4}),
            "dirlink": ("char_lstm", "text", {"source": f"{allowed}/private-dir/secret.csv", "seq_len": 4}),
            "images": ("cnn", "mnist", {"images": str(planted["secret"]), "labels": str(allowed / "good.csv")}),
            "loopback": ("mlp", "csv", {"source": f"http://127.0.0.1:{port}/d.csv", "sha256": sha, "label_column": "y"}),
            "unlisted": ("mlp", "csv", {"source": f"http://localhost:{port}/d.csv", "sha256": sha, "label_column": "y"}),
        }

        async def insert(conn: Any) -> dict[str, int]:
            ids = {}
            for name, (model, dataset, options) in configs.items():
                config = {"name": name, "model": model, "dataset": dataset, **BASE, "dataset_options": options}
                ids[name] = int(await task_queries.insert_task(conn, type="training", requirements={}, config=config))
            return ids

        async def in_db() -> dict[str, int]:
            db = create_database(sqlite_url)
            try:
                async with db.begin() as conn:
                    return await insert(conn)
            finally:
                await db.dispose()

        ids = sync(in_db())
        wait_for(lambda: all(task(sqlite_url, i)["status"] in ("error", "failed", "completed") for i in ids.values()),
                 180, "every planted task to end")
        rows = {name: task(sqlite_url, i) for name, i in ids.items()}
        for name in ("token", "link", "dotdot", "dirlink", "images"):
            row = rows[name]
            assert row["status"] == "error", (name, row["status"], row["error_log"])
            assert "is not allowed: it is outside every folder of dataset_dirs" in row["error_log"], row["error_log"]
        assert "config.dataset_options.source: " + str(agent.data_dir / "api_token") in rows["token"]["error_log"]
        assert "config.dataset_options.images: " in rows["images"]["error_log"]

        texts = {}
        for name in ("loopback", "unlisted"):
            url = configs[name][2]["source"]
            row = rows[name]
            assert row["status"] == "failed", (name, row["error_log"])
            assert f"could not fetch {url} (see this machine's log)" in row["error_log"]
            texts[name] = row["error_log"].replace(url, "URL")
            logs = [m.replace(url, "URL") for m in task_logs(sqlite_url, ids[name]) if "fetch" in m]
            texts[name] += "\n".join(sorted(logs))
        assert texts["loopback"] == texts["unlisted"]
        assert hits == []  # not one request reached the loopback server
        local = "".join(p.read_text(errors="replace") for p in (agent.data_dir / "logs").glob(f"task-{ids['loopback']}-*"))
        assert "127.0.0.1 is a loopback address" in local  # the cause is in this machine's log only

        everything = _all_text(sqlite_url)
        assert planted["marker"] not in everything
        assert token not in everything
        assert "loopback address" not in everything and "not one of the farm's dataset hosts" not in everything
    finally:
        agent.stop()


def test_dataset_hosts_command(tmp_path: Path, database_url: str) -> None:
    """add (normalised, idempotent), list (text and JSON, per farm), remove, and one error line for bad input."""
    async def create() -> None:
        db = create_database(database_url)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    sync(create())
    url = ("--database-url", database_url)
    hosts = lambda *a: _cli(tmp_path, "farm", "dataset-hosts", *a, *url)  # noqa: E731
    assert hosts("list").stdout.startswith("farm 'default': no dataset hosts")
    for entry in ("Files.LAN:8000", "10.0.0.5", "[2001:DB8::1]:443"):
        done = hosts("add", entry)
        assert done.returncode == 0, done.stderr
    again = hosts("add", "files.lan:8000")
    assert again.returncode == 0 and "already" in again.stdout
    assert hosts("list").stdout.split() == sorted(["[2001:db8::1]:443", "10.0.0.5", "files.lan:8000"])
    listed = json.loads(hosts("list", "--json").stdout)
    assert listed == {"farm_name": "default", "dataset_hosts": sorted(["[2001:db8::1]:443", "10.0.0.5", "files.lan:8000"])}
    other = _cli(tmp_path, "farm", "dataset-hosts", "list", "--json", "--farm-name", "other", *url)
    assert json.loads(other.stdout)["dataset_hosts"] == []
    assert hosts("remove", "10.0.0.5").returncode == 0
    assert hosts("list").stdout.split() == sorted(["[2001:db8::1]:443", "files.lan:8000"])
    for bad in ("http://x.org/", "x.org:99999", "bad_host", "a b"):
        done = hosts("add", bad)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"aifarm: error: dataset host {bad!r} is invalid: "), done.stderr
    missing = hosts("remove", "nothere.lan")
    assert missing.returncode != 0 and missing.stderr.strip() == \
        "aifarm: error: nothere.lan is not one of farm 'default''s dataset hosts"
    assert hosts("list").stdout.split() == sorted(["[2001:db8::1]:443", "files.lan:8000"])


def test_dataset_dirs_preference(tmp_path: Path) -> None:
    """`aifarm prefs set dataset_dirs` stores absolute folders; a relative one is one error line and changes nothing."""
    data_dir = ("--data-dir", str(tmp_path / "data"))
    assert _cli(tmp_path, "prefs", "set", "dataset_dirs", f"{tmp_path}/a{':'}{tmp_path}/b", *data_dir).returncode == 0
    shown = json.loads(_cli(tmp_path, "prefs", "--json", *data_dir).stdout)
    assert shown["dataset_dirs"] == [f"{tmp_path}/a", f"{tmp_path}/b"]
    bad = _cli(tmp_path, "prefs", "set", "dataset_dirs", "relative/dir", *data_dir)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "aifarm: error: setting dataset_dirs = 'relative/dir' is invalid: 'relative/dir' is not an absolute path"]
    assert json.loads(_cli(tmp_path, "prefs", "--json", *data_dir).stdout)["dataset_dirs"] == shown["dataset_dirs"]
    assert _cli(tmp_path, "prefs", "unset", "dataset_dirs", *data_dir).returncode == 0
    assert json.loads(_cli(tmp_path, "prefs", "--json", *data_dir).stdout)["dataset_dirs"] == []
