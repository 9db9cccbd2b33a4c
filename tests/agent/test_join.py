"""`aifarm join` / `leave`: the farm's URL is stored privately for the data dir, checked first, never printed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pymysql
from sqlalchemy.engine import make_url

from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import farms as farm_queries
from tests.agent.harness import agent_env
from tests.mysql_server import MysqlServer

PASSWORD = "j0in-s3cret"


def aifarm(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a clean environment."""
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=agent_env(tmp_path), timeout=60)


def user_url(server: MysqlServer, database: str) -> str:
    """A URL with a password, for a user allowed on that database."""
    url = make_url(server.base_url)
    conn = pymysql.connect(host=url.host, port=url.port, user=url.username, password=url.password or "")
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE USER IF NOT EXISTS 'joiner'@'127.0.0.1' IDENTIFIED BY %s", (PASSWORD,))
            cursor.execute(f"GRANT ALL ON `{database}`.* TO 'joiner'@'127.0.0.1'")
    finally:
        conn.close()
    return f"mysql://joiner:{PASSWORD}@127.0.0.1:{url.port}/{database}"


async def test_join_stores_url_privately_and_leave_forgets_it(tmp_path: Path, mysql_server: MysqlServer, mysql_url: str) -> None:
    """join checks the database, writes config.toml 0600, creates the farm secret; leave removes the URL."""
    db = create_database(mysql_url)
    await upgrade(db)
    await db.dispose()
    url = user_url(mysql_server, make_url(mysql_url).database)
    data_dir = tmp_path / "d"
    done = aifarm(tmp_path, "join", url, "--farm-name", "lab", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr and "lab" in done.stdout
    path = data_dir / "config.toml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = tomllib.loads(path.read_text())
    assert saved == {"database_url": url, "farm_name": "lab"}

    shown = aifarm(tmp_path, "config", "--json", "--data-dir", str(data_dir))
    assert PASSWORD not in shown.stdout and '"farm_name": "lab"' in shown.stdout

    db = create_database(url)
    async with db.connect() as conn:
        assert await farm_queries.get_secret(conn, "lab")
    await db.dispose()

    left = aifarm(tmp_path, "leave", "--data-dir", str(data_dir))
    assert left.returncode == 0
    assert tomllib.loads(path.read_text()) == {}


def test_join_refuses_an_unreachable_or_unready_database_and_writes_nothing(tmp_path: Path, mysql_url: str) -> None:
    """A closed port, a malformed URL or a database without schema: one line, non-zero, no file."""
    data_dir = tmp_path / "d"
    for url, expected in (
        ("mysql://joiner:pw@127.0.0.1:1/ai_farm", "cannot reach"),
        ("postgres://x/y", "not supported"),
        (mysql_url, "aifarm db upgrade"),
    ):
        done = aifarm(tmp_path, "join", url, "--data-dir", str(data_dir))
        assert done.returncode != 0 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert not (data_dir / "config.toml").exists()
