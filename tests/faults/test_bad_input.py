"""Bad input to the console script: each case ends promptly with one `aifarm: error:` line, never a traceback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import SECRET, Call, Result, run_cli, run_one

pytestmark = pytest.mark.faults

HUGE = "9" * 23
ARABIC_ONE = "\u0661"
TASK = {"type": "training", "requirements": {}, "priority": 0,
        "config": {"name": "demo", "model": "mlp", "dataset": "synthetic", "batch_size": 32, "learning_rate": 0.01,
                   "epochs": 1, "distributed": False, "n_clients": 1}}


def _write(path: Path, content: bytes | str) -> str:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _run_cases(tmp_path: Path, cases: list[tuple[Call, int, tuple[str, ...]]]) -> list[Result]:
    results = run_cli(tmp_path, *(call for call, _, _ in cases))
    for (_call, code, needles), result in zip(cases, results, strict=True):
        result.assert_error(code, *needles)
    return results


def test_task_files_that_break_the_json_reader(tmp_path: Path) -> None:
    """A 5,000-digit number, 100,000 nested arrays, non-UTF-8 and UTF-16 bytes: each named, nothing submitted."""
    big = _write(tmp_path / "big.json", '{"type": "training", "priority": ' + "9" * 5000 + "}")
    nested = _write(tmp_path / "nested.json", "[" * 100_000)
    latin1 = _write(tmp_path / "latin1.json", '{"type": "tr\xe4ining"}'.encode("latin-1"))
    utf16 = _write(tmp_path / "utf16.json", json.dumps(TASK).encode("utf-16"))
    _run_cases(tmp_path, [
        (Call(["submit", big]), 2, ("big.json", "4300 digits")),
        (Call(["submit", nested]), 2, ("nested.json", "nested too deeply")),
        (Call(["submit", latin1]), 2, ("latin1.json", "not UTF-8")),
        (Call(["submit", utf16]), 2, ("utf16.json", "not UTF-8")),
    ])
    assert not (tmp_path / "data").exists()


def test_numbers_and_ids_on_the_command_line_are_bounded_ascii(tmp_path: Path) -> None:
    """Huge, negative or non-ASCII-digit limits, offsets and task ids are refused by name before any database work."""
    _run_cases(tmp_path, [
        (Call(["tasks", "--limit", HUGE]), 64, ("--limit", "1 to 10000", HUGE)),
        (Call(["tasks", "--offset", HUGE]), 64, ("--offset", HUGE)),
        (Call(["tasks", "--limit", "-1"]), 64, ("--limit", "'-1'")),
        (Call(["tasks", "--limit", "0"]), 64, ("--limit", "'0'")),
        (Call(["tasks", "--offset", "-5"]), 64, ("--offset", "'-5'")),
        (Call(["tasks", "--limit", ARABIC_ONE]), 64, ("--limit",)),
        (Call(["task", HUGE]), 64, ("task id", HUGE)),
        (Call(["cancel", HUGE]), 64, ("task id", HUGE)),
        (Call(["retry", HUGE]), 64, ("task id", HUGE)),
        (Call(["task", ARABIC_ONE]), 64, ("task id", ARABIC_ONE)),
        (Call(["cancel", "\uff11"]), 64, ("task id",)),
        (Call(["task", "0"]), 64, ("task id", "'0'")),
        (Call(["run", "--headless", "--port", HUGE]), 64, ("port", HUGE)),
    ])
    assert not (tmp_path / "data").exists()


def test_config_files_that_cannot_be_used(tmp_path: Path) -> None:
    """A malformed database URL (password hidden) and a config file that is not UTF-8, in the user's and the data dir's file."""
    bad_url = _write(tmp_path / "url.toml", f'database_url = "mysql://u:{SECRET}@[::1/db"\n')
    latin1 = _write(tmp_path / "latin1.toml", 'farm_name = "caf\xe9"\n'.encode("latin-1"))
    local = tmp_path / "local-data"
    local.mkdir()
    _write(local / "config.toml", b'farm_name = "\xff"\n')
    _run_cases(tmp_path, [
        (Call(["config", "--config", bad_url]), 2, ("database_url", "u:***@", "malformed", "url.toml")),
        (Call(["tasks", "--config", bad_url]), 2, ("database_url", "malformed")),
        (Call(["run", "--headless", "--config", bad_url]), 2, ("database_url", "malformed")),
        (Call(["config", "--config", latin1]), 2, ("latin1.toml", "not UTF-8")),
        (Call(["tasks", "--config", latin1]), 2, ("latin1.toml", "not UTF-8")),
        (Call(["config", "--data-dir", str(local)]), 2, ("config.toml", "not UTF-8")),
        (Call(["prefs", "set", "paused", "true", "--data-dir", str(local)]), 2, ("config.toml", "not UTF-8")),
    ])


DURATION_CASES = [
    ("heartbeat_interval = nan", "heartbeat_interval", "100ms and 5m"),
    ("heartbeat_interval = inf", "heartbeat_interval", "100ms and 5m"),
    ("heartbeat_interval = 1e-9", "heartbeat_interval", "100ms and 5m"),
    ('heartbeat_interval = "99999999999999999999d"', "heartbeat_interval", "100ms and 5m"),
    ("heartbeat_interval = " + "9" * 400, "heartbeat_interval", "100ms and 5m"),
    ('heartbeat_interval = "\u0665s"', "heartbeat_interval", "5s"),
    ("failure_timeout = -inf", "failure_timeout", "1s and 1d"),
    ("failure_timeout = 0.001", "failure_timeout", "1s and 1d"),
    ('inactive_after = "999d"', "inactive_after", "1s and 30d"),
    ("orphan_after = nan", "orphan_after", "1m and 365d"),
    ('orphan_after = "1s"', "orphan_after", "1m and 365d"),
]


@pytest.mark.parametrize("command", [["config"], ["run", "--headless"]])
def test_durations_outside_their_range(tmp_path: Path, command: list[str]) -> None:
    """nan, inf, tiny and huge durations are refused, naming the setting and its range; the agent does not start."""
    calls = []
    for n, (line, _, _) in enumerate(DURATION_CASES):
        calls.append(Call([*command, "--config", _write(tmp_path / f"d{n}.toml", line + "\n")]))
    calls.append(Call(command, {"AIFARM_HEARTBEAT_INTERVAL": "nan"}))
    calls.append(Call(command, {"AIFARM_FAILURE_TIMEOUT": "1e-9"}))
    needles = [(name, bound) for _, name, bound in DURATION_CASES]
    needles += [("heartbeat_interval", "environment"), ("failure_timeout", "environment")]
    results = run_cli(tmp_path, *calls)
    for result, expected in zip(results, needles, strict=False):
        result.assert_error(2, *expected)
    assert not (tmp_path / "data").exists()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never sends a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(32)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        for conn in held:
            conn.close()
        thread.join(timeout=5)


def test_database_server_that_never_answers(tmp_path: Path, silent_port: int) -> None:
    """Connect and log in end within about 10 s: the agent and the commands name the server and the timeout."""
    url = f"mysql://farm:{SECRET}@127.0.0.1:{silent_port}/ai_farm"
    commands = [["run", "--headless"], ["tasks"], ["db", "upgrade"], ["db", "check"], ["cancel", "1"]]
    procs = [subprocess.Popen([sys.executable, "-m", "app", *args, "--database-url", url,
                               "--data-dir", str(tmp_path / "data")],
                              env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    for args, proc in zip(commands, procs, strict=False):
        try:
            stdout, stderr = proc.communicate(timeout=45)  # a bound against hanging, not a timing assertion
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail(f"aifarm {args} still waited for the silent server after 45 s")
        result = Result(args, proc.returncode, "" if args[0] == "run" else stdout, stderr)
        result.assert_error(3, f"127.0.0.1:{silent_port}", "within 10 s")
        assert SECRET not in stderr


def _env(tmp_path: Path) -> dict[str, str]:
    from tests.test_cli import _base_env

    return _base_env(tmp_path)


READ_ONLY = [["tasks"], ["task", "1"], ["clients"], ["stats"], ["models"], ["db", "check"], ["db", "stats"],
             ["maintenance", "run", "--dry-run"]]


def test_read_only_commands_create_no_database(tmp_path: Path) -> None:
    """Listing on a database that does not exist says so, and creates neither the file nor its directories."""
    calls = [Call([*args, "--database-url", "sqlite:///x/y.db"]) for args in READ_ONLY]
    calls += [Call(args) for args in READ_ONLY]
    results = run_cli(tmp_path, *calls)
    for result in results[:len(READ_ONLY)]:
        result.assert_error(4, str(tmp_path / "x" / "y.db"), "does not exist")
    for result in results[len(READ_ONLY):]:
        result.assert_error(4, str(tmp_path / "data" / "aifarm.sqlite3"), "does not exist")
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "data").exists()


def _damage_truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 3)


def _damage_garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 400)


def _damage_page(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(b"\x55" * 8192)


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_garbage, _damage_page], ids=["truncated", "garbage", "page"])
def test_damaged_embedded_database(tmp_path: Path, damage: object) -> None:
    """A damaged aifarm.sqlite3 is named with its recovery; moving it aside and restoring a backup works."""
    data = tmp_path / "data"
    run_one(tmp_path, "db", "upgrade").assert_ok()
    run_one(tmp_path, "submit", _write(tmp_path / "task.json", json.dumps(TASK))).assert_ok()
    backup = tmp_path / "backup.sqlite3"
    run_one(tmp_path, "db", "backup", str(backup)).assert_ok()
    database = data / "aifarm.sqlite3"
    for extra in ("-wal", "-shm"):
        Path(f"{database}{extra}").unlink(missing_ok=True)
    assert callable(damage)
    damage(database)
    damaged = database.read_bytes()

    results = run_cli(tmp_path, ["run", "--headless"], ["tasks"], ["task", "1"], ["clients", "--json"],
                      ["db", "upgrade"], ["submit", str(tmp_path / "task.json")])
    for result in results:
        result.stdout = "" if result.args[0] == "run" else result.stdout
        result.assert_error(3, str(database), "damaged", "aifarm db restore", "aside")
    assert database.read_bytes() == damaged

    shutil.move(database, tmp_path / "aifarm.sqlite3.damaged")
    run_one(tmp_path, "db", "restore", str(backup)).assert_ok()
    listed = run_one(tmp_path, "tasks", "--json").assert_ok()
    assert listed.json()["total"] == 1
