"""The `aifarm` console script end to end: real subprocesses against SQLite and the test MariaDB server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from app import __version__
from app.config import SPECS
from app.db.engine import Database, create_database
from app.db.migrate import known_revisions, upgrade
from app.db.queries import clients as client_queries
from app.db.queries import tasks as task_queries
from app.db.schema import tasks as tasks_table
from tests.mysql_server import MysqlServer

SECRET = "s3cret-pw"
WRONG_SECRET = "wr0ng-pw-x"
SECRETS = (SECRET, WRONG_SECRET)
UNREACHABLE = f"mysql://root:{SECRET}@127.0.0.1:1/ai_farm"


@dataclass
class Call:
    """One command line to run, with extra environment variables."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    """What one run of the console script printed and returned."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """Stdout parsed as JSON."""
        return json.loads(self.stdout)

    def assert_ok(self) -> Result:
        """Exit 0 with nothing on stderr."""
        assert self.returncode == 0, f"{self.args}: rc={self.returncode}\n{self.stderr}"
        assert "Traceback" not in self.stderr, self.stderr
        return self

    def assert_error(self, code: int, *needles: str) -> Result:
        """Exit `code` with one `aifarm: error:` line on stderr that contains every needle."""
        assert self.returncode == code, f"{self.args}: rc={self.returncode}, stderr={self.stderr!r}"
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, f"{self.args}: expected one line on stderr, got {self.stderr!r}"
        assert lines[0].startswith("aifarm: error: "), lines[0]
        for needle in needles:
            assert needle in lines[0], f"{self.args}: {needle!r} not in {lines[0]!r}"
        assert self.stdout == "", self.stdout
        return self


def _base_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without AIFARM_* and with a config file that does not exist."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIFARM_")}
    env["AIFARM_CONFIG"] = str(tmp_path / "no-such-config.toml")
    return env


def run_cli(tmp_path: Path, *calls: Call | Sequence[str]) -> list[Result]:
    """Run the console script once per call, all at the same time, and return their results in order."""
    base = _base_env(tmp_path)
    data_dir = str(tmp_path / "data")
    procs: list[tuple[list[str], subprocess.Popen[str]]] = []
    for call in calls:
        if not isinstance(call, Call):
            call = Call(list(call))
        args = list(call.args)
        if args and not args[0].startswith("-") and "--data-dir" not in args:
            args += ["--data-dir", data_dir]
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            env={**base, **call.env},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((args, proc))
    results = []
    for args, proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"aifarm {args} did not finish in 120 s: {stderr}")
        for secret in SECRETS:
            assert secret not in stdout and secret not in stderr, f"{args} printed a password:\n{stdout}\n{stderr}"
        results.append(Result(args, proc.returncode, stdout, stderr))
    return results


def run_one(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the console script once."""
    return run_cli(tmp_path, Call(list(args), env or {}))[0]


def _pymysql_connect(server: MysqlServer) -> Any:
    """A pymysql connection to the test server as its administrator."""
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(server.base_url)
    return pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "", autocommit=True
    )


@pytest.fixture
def password_user(mysql_server: MysqlServer) -> Iterator[str]:
    """A MariaDB user whose password is SECRET and who may create databases; dropped after the test."""
    name = f"aifarm_u_{uuid.uuid4().hex[:8]}"
    conn = _pymysql_connect(mysql_server)
    try:
        with conn.cursor() as cursor:
            for host in ("%", "localhost", "127.0.0.1"):
                cursor.execute(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{SECRET}'")
                cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{name}'@'{host}'")
        yield name
    finally:
        with conn.cursor() as cursor:
            for host in ("%", "localhost", "127.0.0.1"):
                cursor.execute(f"DROP USER IF EXISTS '{name}'@'{host}'")
        conn.close()


# --- version, config --------------------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    """`--version` prints the package version and exits 0."""
    result = run_one(tmp_path, "--version").assert_ok()
    assert result.stdout.strip() == f"aifarm {__version__}"
    assert __version__.count(".") == 2


def test_config_shows_effective_settings_redacted(tmp_path: Path) -> None:
    """`config` shows every setting, its source, and the database URL without its password."""
    config_file = tmp_path / "farm.toml"
    config_file.write_text("dashboard_port = 9100\npeers = ['a.lan:8471']\n", encoding="utf-8")
    url = f"mysql://farm:{SECRET}@db.lan:3306/ai_farm"
    env = {"AIFARM_FARM_NAME": "lab-7"}
    as_json, as_text, env_url = run_cli(
        tmp_path,
        Call(["config", "--json", "--database-url", url, "--config", str(config_file)], env),
        Call(["config", "--database-url", url, "--config", str(config_file), "--log-level", "debug"], env),
        Call(["config", "--json"], {"AIFARM_DATABASE_URL": url}),
    )
    values = as_json.assert_ok().json()
    assert set(values) == {spec.name for spec in SPECS}
    assert values["database_url"] == "mysql://farm:***@db.lan:3306/ai_farm"
    assert values["farm_name"] == "lab-7"
    assert values["dashboard_port"] == 9100
    assert values["peers"] == ["a.lan:8471"]
    assert values["data_dir"] == str(tmp_path / "data")
    assert values["heartbeat_interval"] == 2.0
    assert values["log_level"] == "INFO"

    lines = {line.split()[0]: line for line in as_text.assert_ok().stdout.splitlines()}
    assert lines["SETTING"].split() == ["SETTING", "VALUE", "FROM"]
    assert "mysql://farm:***@db.lan:3306/ai_farm" in lines["database_url"]
    assert lines["database_url"].endswith("command line")
    assert lines["farm_name"].endswith("environment") and "lab-7" in lines["farm_name"]
    assert lines["dashboard_port"].endswith(str(config_file)) and "9100" in lines["dashboard_port"]
    assert lines["log_level"].split()[1:] == ["DEBUG", "command", "line"]
    assert lines["retention_days"].split()[1:] == ["30", "default"]

    assert env_url.assert_ok().json()["database_url"] == "mysql://farm:***@db.lan:3306/ai_farm"


# --- db upgrade / db check --------------------------------------------------------------------------------------


def test_db_upgrade_then_check_then_current(tmp_path: Path, database_url: str) -> None:
    """`db upgrade` creates the schema, `db check` finds it matches, a second upgrade says current."""
    first = run_one(tmp_path, "db", "upgrade", "--database-url", database_url).assert_ok()
    assert "schema upgraded from empty to revision" in first.stdout
    head = known_revisions()[-1]
    assert first.stdout.strip().endswith(f"revision {head}")

    check, check_json, again = run_cli(
        tmp_path,
        ["db", "check", "--database-url", database_url],
        ["db", "check", "--json", "--database-url", database_url],
        ["db", "upgrade", "--database-url", database_url],
    )
    assert "the schema matches" in check.assert_ok().stdout
    assert "difference:" not in check.stdout
    report = check_json.assert_ok().json()
    assert report["differences"] == []
    assert isinstance(report["additions"], list)
    assert f"schema is current (revision {head})" in again.assert_ok().stdout


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    """Without a database URL, `db upgrade` creates the embedded SQLite file in the data dir."""
    result = run_one(tmp_path, "db", "upgrade").assert_ok()
    assert (tmp_path / "data" / "aifarm.sqlite3").is_file()
    assert str(tmp_path / "data" / "aifarm.sqlite3") in result.stdout
    tasks, = run_cli(tmp_path, ["tasks"])
    assert "no tasks yet" in tasks.assert_ok().stdout


def test_mysql_password_never_printed(tmp_path: Path, mysql_url: str, password_user: str) -> None:
    """With a password in the URL, success and failure output alike show no password."""
    from sqlalchemy.engine import make_url

    server_url = make_url(mysql_url)
    good = server_url.set(username=password_user, password=SECRET).render_as_string(hide_password=False)
    bad = server_url.set(username=password_user, password=WRONG_SECRET).render_as_string(hide_password=False)
    upgraded = run_one(tmp_path, "db", "upgrade", "--database-url", good).assert_ok()
    assert f"{password_user}:***@" in upgraded.stdout

    results = run_cli(
        tmp_path,
        ["tasks", "--database-url", good],
        ["db", "check", "--database-url", good],
        ["config", "--json", "--database-url", good],
        ["tasks", "--database-url", bad],
        ["stats", "--json", "--database-url", bad],
        ["db", "upgrade", "--database-url", bad],
        ["db", "check", "--database-url", bad],
        Call(["clients", "--log-level", "DEBUG", "--database-url", bad]),
    )
    tasks, check, config, *failures, debug = results
    assert "no tasks yet" in tasks.assert_ok().stdout
    assert "the schema matches" in check.assert_ok().stdout
    assert config.assert_ok().json()["database_url"] == good.replace(SECRET, "***")
    for failure in failures:
        failure.assert_error(3, "refused the login", repr(password_user))
    # At DEBUG the log lines come first; the error is still the one last line (and no password anywhere).
    assert debug.returncode == 3 and "Traceback" not in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("aifarm: error: ")


# --- tasks / clients / stats ------------------------------------------------------------------------------------


async def test_empty_database_listings(tmp_path: Path, db: Database, database_url: str) -> None:
    """On an upgraded but empty database each listing prints its helpful empty-state line."""
    url = ["--database-url", database_url]
    tasks, tasks_json, filtered, clients, clients_json, stats, stats_json = run_cli(
        tmp_path,
        ["tasks", *url],
        ["tasks", "--json", *url],
        ["tasks", "--status", "failed", *url],
        ["clients", *url],
        ["clients", "--json", *url],
        ["stats", *url],
        ["stats", "--json", *url],
    )
    assert tasks.assert_ok().stdout == "no tasks yet: submit one with `aifarm submit FILE.json`\n"
    assert tasks_json.assert_ok().json() == {"tasks": [], "total": 0, "limit": 50, "offset": 0}
    assert filtered.assert_ok().stdout == "no tasks match these filters\n"
    assert clients.assert_ok().stdout == "no clients yet: start an agent with `aifarm run`\n"
    assert clients_json.assert_ok().json() == {"clients": []}
    assert stats.assert_ok().stdout.splitlines() == ["tasks:   none", "clients: none"]
    assert stats_json.assert_ok().json() == {"by_type": [], "tasks_by_status": {}, "clients_by_status": {}}


async def _fill(db: Database) -> dict[str, int]:
    """Insert two clients and five tasks; return the task ids by name."""
    async with db.begin() as conn:
        machines = (("client-alpha", "alpha.lan", 16, 32768), ("client-beta", "beta.lan", 8, 8192))
        for client_id, host, cores, ram in machines:
            await client_queries.upsert_client(
                conn,
                client_id=client_id,
                cpu_info={"logical_cores": cores, "model": "test cpu"},
                ram_info={"total_mb": ram},
                gpu_info=[{"index": 0, "name": "Test GPU", "memory_mb": 24576}] if client_id == "client-alpha" else [],
                session_info={"pid": 1},
                version="0.1.0",
                hostname=host,
            )
        await client_queries.set_client_status(conn, "client-beta", "inactive")
        ids = {}
        for name, type_, status, priority in (
            ("mnist-small", "train", "pending", 5),
            ("resnet-big", "train", "running", 3),
            ("bert-tune", "finetune", "completed", 2),
            ("gpt-crash", "train", "failed", 0),
            ("lora-next", "finetune", "pending", 1),
        ):
            ids[name] = await task_queries.insert_task(
                conn, type=type_, requirements={"gpu": True}, config={"name": name}, priority=priority, status=status
            )
        await conn.execute(
            update(tasks_table)
            .where(tasks_table.c.id == ids["resnet-big"])
            .values(client_id="client-alpha", result={"progress": 42.5})
        )
        created = (
            await conn.execute(select(tasks_table.c.created_at).where(tasks_table.c.id == ids["bert-tune"]))
        ).scalar_one()
        await conn.execute(
            update(tasks_table)
            .where(tasks_table.c.id == ids["bert-tune"])
            .values(updated_at=created + timedelta(seconds=90))
        )
    return ids


async def test_listings_with_rows(tmp_path: Path, db: Database, database_url: str) -> None:
    """`tasks`, `clients` and `stats` show inserted rows as text and exact JSON, and filters work."""
    ids = await _fill(db)
    url = ["--database-url", database_url]
    (
        tasks, tasks_json, pending_json, running, finetune_json, error_none, page,
        clients, clients_json, inactive_json, stats, stats_json,
    ) = run_cli(
        tmp_path,
        ["tasks", *url],
        ["tasks", "--json", *url],
        ["tasks", "--status", "pending", "--json", *url],
        ["tasks", "--status", "running", *url],
        ["tasks", "--type", "finetune", "--json", "--sort", "oldest", *url],
        ["tasks", "--status", "error", *url],
        ["tasks", "--limit", "2", *url],
        ["clients", *url],
        ["clients", "--json", *url],
        ["clients", "--status", "inactive", "--json", *url],
        ["stats", *url],
        ["stats", "--json", *url],
    )

    lines = tasks.assert_ok().stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "TYPE", "STATUS", "PRIORITY", "PROGRESS", "CLIENT", "CREATED"]
    assert len(lines) == 6
    by_name = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(by_name) == set(ids)
    for name, task_id in ids.items():
        assert by_name[name][0] == str(task_id)
    assert by_name["resnet-big"][2:7] == ["train", "running", "3", "42.5%", "client-alpha"]
    assert by_name["mnist-small"][2:7] == ["train", "pending", "5", "-", "-"]
    assert lines[1].split()[1] == "mnist-small", "highest priority first"

    data = tasks_json.assert_ok().json()
    assert data["total"] == 5
    assert [task["id"] for task in data["tasks"]] == [
        ids[name] for name in ("mnist-small", "resnet-big", "bert-tune", "lora-next", "gpt-crash")
    ]
    resnet = next(task for task in data["tasks"] if task["id"] == ids["resnet-big"])
    assert resnet["config"] == {"name": "resnet-big"}
    assert resnet["result"] == {"progress": 42.5}
    assert resnet["client_id"] == "client-alpha"
    assert resnet["status"] == "running"

    pending = pending_json.assert_ok().json()
    assert pending["total"] == 2
    assert [task["id"] for task in pending["tasks"]] == [ids["mnist-small"], ids["lora-next"]]
    assert {task["status"] for task in pending["tasks"]} == {"pending"}

    running_lines = running.assert_ok().stdout.splitlines()
    assert len(running_lines) == 2 and "resnet-big" in running_lines[1]

    finetune = finetune_json.assert_ok().json()
    assert finetune["total"] == 2
    assert [task["id"] for task in finetune["tasks"]] == [ids["bert-tune"], ids["lora-next"]]

    assert error_none.assert_ok().stdout == "no tasks match these filters\n"
    page_lines = page.assert_ok().stdout.splitlines()
    assert len(page_lines) == 4 and page_lines[-1] == "(2 of 5; use --offset/--limit for more)"

    client_lines = clients.assert_ok().stdout.splitlines()
    assert client_lines[0].split() == ["ID", "HOST", "STATUS", "CORES", "RAM", "GPUS", "VERSION", "LAST", "SEEN"]
    rows = {line.split()[0]: line.split() for line in client_lines[1:]}
    assert set(rows) == {"client-alpha", "client-beta"}
    assert rows["client-alpha"][1:8] == ["alpha.lan", "active", "16", "32.0", "GiB", "1", "0.1.0"]
    assert rows["client-beta"][1:8] == ["beta.lan", "inactive", "8", "8.0", "GiB", "0", "0.1.0"]

    listed = clients_json.assert_ok().json()["clients"]
    assert sorted(client["id"] for client in listed) == ["client-alpha", "client-beta"]
    alpha = next(client for client in listed if client["id"] == "client-alpha")
    assert alpha["cpu_info"]["logical_cores"] == 16 and alpha["gpu_info"][0]["name"] == "Test GPU"
    assert [client["id"] for client in inactive_json.assert_ok().json()["clients"]] == ["client-beta"]

    stat_lines = stats.assert_ok().stdout.splitlines()
    assert stat_lines[0] == "tasks:   1 completed, 1 failed, 2 pending, 1 running"
    assert stat_lines[1] == "clients: 1 active, 1 inactive"
    table = {line.split()[0]: line.split() for line in stat_lines[3:]}
    assert table["TYPE"] == ["TYPE", "TOTAL", "COMPLETED", "FAILED", "AVG", "COMPLETION"]
    assert table["finetune"] == ["finetune", "2", "1", "0", "1", "min"]  # as the dashboard shows 90 s
    assert table["train"] == ["train", "3", "0", "1", "-"]

    summary = stats_json.assert_ok().json()
    assert summary["tasks_by_status"] == {"completed": 1, "failed": 1, "pending": 2, "running": 1}
    assert summary["clients_by_status"] == {"active": 1, "inactive": 1}
    by_type = {row["type"]: row for row in summary["by_type"]}
    assert by_type["finetune"] == {"type": "finetune", "total": 2, "completed": 1, "failed": 0,
                                   "avg_completion_time": pytest.approx(90.0)}
    assert by_type["train"] == {"type": "train", "total": 3, "completed": 0, "failed": 1, "avg_completion_time": None}


# --- schema errors ----------------------------------------------------------------------------------------------


async def test_schema_missing_or_from_another_version(tmp_path: Path, database_url: str) -> None:
    """No schema says to run `aifarm db upgrade`; an older revision too; a newer one says to upgrade AI Farm."""
    url = ["--database-url", database_url]
    for result in run_cli(tmp_path, ["tasks", *url], ["clients", "--json", *url], ["stats", *url]):
        result.assert_error(4, "aifarm db upgrade")

    db = create_database(database_url)
    try:
        revisions = known_revisions()
        if len(revisions) > 1:
            await upgrade(db, revisions[-2])
            old_tasks, old_stats = run_cli(tmp_path, ["tasks", *url], ["stats", *url])
            old_tasks.assert_error(4, revisions[-2], revisions[-1], "run `aifarm db upgrade`")
            old_stats.assert_error(4, revisions[-2], "run `aifarm db upgrade`")
            upgraded = run_one(tmp_path, "db", "upgrade", *url).assert_ok()
            assert f"from {revisions[-2]} to revision {revisions[-1]}" in upgraded.stdout
        else:
            await upgrade(db)

        async with db.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        tasks, stats, db_upgrade = run_cli(
            tmp_path, ["tasks", *url], ["stats", "--json", *url], ["db", "upgrade", *url]
        )
        tasks.assert_error(4, "9999", "upgrade AI Farm")
        stats.assert_error(4, "9999", "upgrade AI Farm")
        db_upgrade.assert_error(4, "9999", "upgrade AI Farm")
        assert "db upgrade" not in tasks.stderr
    finally:
        await db.dispose()


# --- other errors -----------------------------------------------------------------------------------------------


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    """Bad URLs, an unreachable server and bad settings each give one `aifarm: error:` line and an exit code."""
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("farm_name = lab\n[broken\n", encoding="utf-8")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text('colour = "blue"\n', encoding="utf-8")
    cases: list[tuple[Call, int, tuple[str, ...]]] = [
        (Call(["tasks", "--database-url", "mysql://"]), 2, ("database URL", "names no host")),
        (Call(["tasks", "--database-url", f"mysql://root:{SECRET}@/ai_farm"]), 2, ("root:***@", "names no host")),
        (Call(["db", "upgrade", "--database-url", f"mysql://root:{SECRET}@db.lan"]), 2, ("names no database",)),
        (Call(["tasks", "--database-url", "postgres://x/y"]), 2, ("'postgres'", "not supported")),
        (Call(["stats", "--database-url", f"postgresql://u:{SECRET}@x/y"]), 2, ("'postgresql'", "not supported")),
        (Call(["clients", "--database-url", "not a url"]), 2, ("'not a url'", "malformed")),
        (Call(["tasks", "--database-url", "mysql://root@127.0.0.1:1/ai_farm"]), 3,
         ("cannot reach the database server", "127.0.0.1:1")),
        (Call(["db", "upgrade", "--database-url", UNREACHABLE]), 3,
         ("cannot reach the database server", "127.0.0.1:1")),
        (Call(["db", "check", "--database-url", UNREACHABLE]), 3, ("cannot reach the database server", "127.0.0.1:1")),
        (Call(["tasks"], {"AIFARM_DATABASE_URL": UNREACHABLE}), 3, ("cannot reach", "127.0.0.1:1")),
        (Call(["config"], {"AIFARM_DASHBOARD_PORT": "99999"}), 2, ("dashboard_port", "99999", "environment")),
        (Call(["tasks"], {"AIFARM_DASHBOARD_PORT": "99999"}), 2, ("dashboard_port", "99999")),
        (Call(["tasks", "--log-level", "LOUD"]), 2, ("log_level", "LOUD", "command line")),
        (Call(["config"], {"AIFARM_HEARTBEAT_INTERVAL": "soon"}), 2, ("heartbeat_interval", "soon")),
        (Call(["config"], {"AIFARM_DASHBOARD_HOST": "0.0.0.0"}), 2, ("dashboard_host", "0.0.0.0", "expose")),
        (Call(["config"], {"AIFARM_CONFIG": str(bad_toml)}), 2, (str(bad_toml), "not valid TOML")),
        (Call(["config", "--config", str(unknown_key)]), 2, (str(unknown_key), "'colour'")),
    ]
    results = run_cli(tmp_path, *(call for call, _, _ in cases))
    for (_call, code, needles), result in zip(cases, results, strict=True):
        result.assert_error(code, *needles)


def test_tasks_on_missing_sqlite_file_does_not_create_schema(tmp_path: Path) -> None:
    """Listing tasks on a fresh data dir says the database does not exist and creates neither it nor the data dir."""
    result = run_one(tmp_path, "tasks")
    result.assert_error(4, "does not exist", "aifarm db upgrade")
    again = run_one(tmp_path, "tasks")
    again.assert_error(4, "does not exist", "aifarm db upgrade")
    assert not (tmp_path / "data").exists()
