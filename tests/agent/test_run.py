"""`aifarm run` as a real process: it opens the database, answers on its dashboard port, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.db.engine import create_database
from app.db.migrate import upgrade
from app.db.queries import clients as client_queries

URL_LINE = re.compile(r"agent (\S+) running; dashboard at (http://\S+)")
SIGNIN_LINE = re.compile(r"one-time link\): (http://\S+)")
# A stop may wait out a stuck database call (5 s per step) and the exit guard after it: as AgentProcess.stop allows.
STOP_SECONDS = 30


def agent_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a child agent: no AIFARM_* from the caller, no user config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFARM_")}
    env["AIFARM_CONFIG"] = str(tmp_path / "no-config.toml")
    return env


def start_agent(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str, str]:
    """Start `aifarm run` and wait for its 'running' line; returns (process, client id, dashboard URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--headless", "--port", "0", "--peer-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agent_env(tmp_path),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = URL_LINE.search(line)
        if match:
            signin = SIGNIN_LINE.search(proc.stdout.readline())
            assert signin, "no sign-in line"
            SIGNIN[match.group(2)] = signin.group(1)
            return proc, match.group(1), match.group(2)
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"agent did not start: exit={proc.returncode}\n{out}\n{err}")


SIGNIN: dict[str, str] = {}
_OPENERS: dict[str, urllib.request.OpenerDirector] = {}


def _opener(url: str) -> urllib.request.OpenerDirector:
    """A cookie-keeping client signed in through the agent's one-time link."""
    if url not in _OPENERS:
        import http.cookiejar

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(SIGNIN[url], timeout=5) as response:
            assert response.status == 200
        _OPENERS[url] = opener
    return _OPENERS[url]


def get(url: str, host: str | None = None, signed_in: bool = True) -> tuple[int, str]:
    """GET a URL (signed in by default); returns (status, body) also for error statuses."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = _opener(url) if signed_in else urllib.request.build_opener()
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def client_status(url: str, client_id: str) -> str | None:
    """The status column of a client's row."""
    db = create_database(url)
    try:
        async with db.connect() as conn:
            row = await client_queries.get_client(conn, client_id)
    finally:
        await db.dispose()
    return row["status"] if row else None


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_embedded_agent_serves_dashboard_and_stops_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    """No database configured: the agent creates its SQLite file, answers, and exits 0 on Ctrl-C/SIGTERM."""
    data_dir = tmp_path / "data"
    proc, client_id, url = start_agent(tmp_path, "--data-dir", str(data_dir))
    try:
        status, body = get(url, signed_in=False)
        assert status == 401 and "aifarm dashboard" in body and client_id not in body
        status, body = get(url)
        assert status == 200
        assert client_id in body and "Overview" in body
        assert (data_dir / "aifarm.sqlite3").exists()
        assert (data_dir / "client_id").read_text().strip() == client_id
        sqlite_url = f"sqlite:///{data_dir / 'aifarm.sqlite3'}"
        assert await client_status(sqlite_url, client_id) == "active"
    finally:
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=STOP_SECONDS)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert await client_status(sqlite_url, client_id) == "inactive"


async def test_agent_on_mysql_refuses_missing_schema_then_runs(tmp_path: Path, mysql_url: str) -> None:
    """A shared database is never upgraded implicitly: one clear line, then it runs after `db upgrade`."""
    env = agent_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "app", "run", "--headless", "--port", "0", "--database-url", mysql_url,
         "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode != 0
    assert "aifarm db upgrade" in done.stderr and "Traceback" not in done.stderr

    db = create_database(mysql_url)
    await upgrade(db)
    await db.dispose()
    proc, client_id, url = start_agent(tmp_path, "--data-dir", str(tmp_path / "d"), "--database-url", mysql_url)
    try:
        assert get(url)[0] == 200
        assert await client_status(mysql_url, client_id) == "active"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=STOP_SECONDS)
    assert proc.returncode == 0
    assert await client_status(mysql_url, client_id) == "inactive"


def test_dashboard_refuses_foreign_host_header(tmp_path: Path) -> None:
    """DNS rebinding: a request whose Host is not this agent's address gets 403 and no page."""
    proc, client_id, url = start_agent(tmp_path, "--data-dir", str(tmp_path / "d"))
    try:
        port = url.rstrip("/").rsplit(":", 1)[1]
        status, body = get(url, host=f"attacker.example:{port}")
        assert status == 403 and client_id not in body
        assert get(url, host=f"localhost:{port}")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=STOP_SECONDS)


def test_agent_process_never_loads_torch(tmp_path: Path) -> None:
    """The agent stays small: no torch library is mapped into its process."""
    proc, client_id, url = start_agent(tmp_path, "--data-dir", str(tmp_path / "d"))
    try:
        assert get(url)[0] == 200
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libtorch" not in maps and "/torch/" not in maps
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)  # this test is about torch; stop time is asserted by the tests above
