"""The least-privilege agent account: the SQL, applying it on MariaDB, what it may and may not do, real agents on it."""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.commands_ops import db_create_agent_user
from app.db.engine import create_database, mysql_error_code
from app.db.migrate import open_current_database, upgrade
from app.db.schema import clients
from app.errors import ValidationError
from app.operations.accounts import agent_user_sql
from tests.mysql_server import MysqlServer
from tests.operations import make_settings, utcnow

ACCESS_DENIED = {1044, 1142, 1227, 1410}


def test_agent_user_sql_grants_rows_only_and_quotes() -> None:
    """Three statements: create, set the password, grant rows on this database only (wildcards escaped)."""
    create, alter, grant = agent_user_sql("farm-agent", "10.0.%", "ai_farm", "it's-a-pw")
    assert create == "CREATE USER IF NOT EXISTS 'farm-agent'@'10.0.%' IDENTIFIED BY 'it''s-a-pw'"
    assert alter == "ALTER USER 'farm-agent'@'10.0.%' IDENTIFIED BY 'it''s-a-pw'"
    assert grant == "GRANT SELECT, INSERT, UPDATE, DELETE ON `ai\\_farm`.* TO 'farm-agent'@'10.0.%'"
    for word in ("ALL", "OPTION", "FILE", "PROCESS", "CREATE,", "DROP", "ALTER,", "SUPER"):
        assert word not in grant


@pytest.mark.parametrize("name, host, database, password", [
    ("bad'name", "%", "ai_farm", "pw"),
    ("ok", "host name", "ai_farm", "pw"),
    ("", "%", "ai_farm", "pw"),
    ("x" * 33, "%", "ai_farm", "pw"),
    ("ok", "%", "ai`farm", "pw"),
    ("ok", "%", "ai_farm", "back\\slash"),
    ("ok", "%", "ai_farm", ""),
])
def test_agent_user_sql_refuses_unsafe_input(name: str, host: str, database: str, password: str) -> None:
    """Names, hosts and databases outside the safe characters, and unquotable passwords, are refused."""
    with pytest.raises(ValidationError):
        agent_user_sql(name, host, database, password)


def _root_exec(server: MysqlServer, statement: str) -> None:
    import pymysql

    url = make_url(server.base_url)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password or "")
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def account_name(mysql_server: MysqlServer) -> Iterator[str]:
    """A fresh account name; the account is dropped after the test."""
    name = f"agent_{uuid.uuid4().hex[:8]}"
    yield name
    _root_exec(mysql_server, f"DROP USER IF EXISTS '{name}'@'%'")


def _args(name: str, *, apply: bool, password: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(name=name, host="%", password=password, apply=apply)


async def _create_account(tmp_path: Path, mysql_url: str, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`aifarm db create-agent-user NAME --apply` with the root URL; returns the agent URL it printed."""
    db = create_database(mysql_url)
    await upgrade(db)
    await db.dispose()
    settings = make_settings(tmp_path, database_url=mysql_url)
    assert await db_create_agent_user(_args(name, apply=True), settings) == 0
    out = capsys.readouterr().out
    match = re.search(r"agents use: (\S+)", out)
    assert match, out
    return match.group(1)


async def test_print_mode_shows_sql_and_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --apply the SQL and the agent URL are printed with the given password; nothing is connected."""
    settings = make_settings(tmp_path, database_url="mysql://root:rootpw@db.lan:3307/ai_farm")
    assert await db_create_agent_user(_args("farm", apply=False, password="Pw-123"), settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "CREATE USER IF NOT EXISTS 'farm'@'%' IDENTIFIED BY 'Pw-123';"
    assert out[2].startswith("GRANT SELECT, INSERT, UPDATE, DELETE ON `ai\\_farm`.*")
    assert out[3].endswith("mysql://farm:Pw-123@db.lan:3307/ai_farm")
    assert "rootpw" not in "\n".join(out)


async def test_agent_account_may_change_rows_but_not_the_schema(tmp_path: Path, mysql_url: str, account_name: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The applied account reads and writes farm rows; CREATE TABLE, DROP TABLE and GRANT are denied."""
    url = await _create_account(tmp_path, mysql_url, account_name, capsys)
    assert make_url(url).username == account_name and make_url(url).password
    agent = await open_current_database(url)  # reads alembic_version
    try:
        async with agent.begin() as conn:
            await conn.execute(clients.insert().values(id="c1", cpu_info={}, ram_info={}, last_seen=utcnow(),
                                                       status="active"))
            await conn.execute(update(clients).where(clients.c.id == "c1").values(status="inactive"))
            assert (await conn.execute(select(clients.c.status))).scalars().all() == ["inactive"]
            await conn.execute(delete(clients).where(clients.c.id == "c1"))
        for statement in ("CREATE TABLE intruder (id INT PRIMARY KEY)", "DROP TABLE clients",
                          f"GRANT SELECT ON `{agent.url.database}`.* TO '{account_name}'@'%'",
                          "SELECT * FROM mysql.user", "CREATE USER 'another'@'%'"):
            with pytest.raises(DBAPIError) as caught:
                async with agent.engine.begin() as conn:  # the raw error (Database maps 1044 to a login failure)
                    await conn.execute(text(statement))
            assert mysql_error_code(caught.value) in ACCESS_DENIED, (statement, caught.value)
            assert "denied" in str(caught.value).lower()
    finally:
        await agent.dispose()

    # Run again: the account exists, its password is reset and the new URL works.
    second = await _create_account(tmp_path, mysql_url, account_name, capsys)
    assert make_url(second).password != make_url(url).password
    db = await open_current_database(second)
    await db.dispose()


@pytest.mark.slow
async def test_two_agents_train_with_the_restricted_account(tmp_path: Path, mysql_url: str, account_name: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two real agents on the least-privilege URL run a distributed task to completion."""
    from tests.agent.harness import AgentProcess, wait_for
    from tests.training.e2e import mlp_task, submit, task

    url = await _create_account(tmp_path, mysql_url, account_name, capsys)
    a = AgentProcess(tmp_path, "a", "--database-url", url, "--heartbeat-interval", "1s")
    b = AgentProcess(tmp_path, "b", "--database-url", url, "--heartbeat-interval", "1s")
    try:
        task_id = submit(tmp_path, url, mlp_task("restricted", n_clients=2, epochs=1, samples=800))
        wait_for(lambda: task(url, task_id)["status"] in ("completed", "failed", "error"), 180, "the task to end")
        row = task(url, task_id)
        assert row["status"] == "completed", row["error_log"]
    finally:
        a.stop()
        b.stop()
    for agent in (a, b):
        assert "denied" not in agent.log().lower(), agent.log()[-3000:]
