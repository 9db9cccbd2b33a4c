"""Command-line conventions end to end: usage errors exit 64, --json outcomes, shell completion, progress display."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from tests.agent.harness import AgentProcess
from tests.test_cli import Call, Result, _base_env, run_cli, run_one

TASK: dict[str, Any] = {
    "type": "training", "requirements": {"min_cpu_cores": 1}, "priority": 0,
    "config": {"name": "conv", "model": "mlp", "dataset": "synthetic", "batch_size": 32, "learning_rate": 0.01,
               "epochs": 1, "distributed": False, "n_clients": 1, "checkpoint_interval": "1h30m"},
}


def _json_object(result: Result) -> dict[str, Any]:
    """Exit 0 and exactly one JSON object on stdout."""
    result.assert_ok()
    value = json.loads(result.stdout)
    assert isinstance(value, dict), result.stdout
    return value


def _task_file(tmp_path: Path) -> str:
    path = tmp_path / "task.json"
    path.write_text(json.dumps(TASK), encoding="utf-8")
    return str(path)


# --- usage errors ----------------------------------------------------------------------------------------------------


def test_usage_errors_exit_64_with_one_line(tmp_path: Path) -> None:
    """Unknown commands, missing or unknown arguments and bad choices exit 64 (EX_USAGE), one line naming the help."""
    cases = [
        (Call(["nosuch"]), ("invalid choice", "(see `aifarm --help`)")),
        (Call(["cancel"]), ("required", "(see `aifarm cancel --help`)")),
        (Call(["tasks", "--bogus"]), ("unrecognized arguments: --bogus",)),
        (Call(["completion", "tcsh"]), ("'tcsh'", "(see `aifarm completion --help`)")),
        (Call(["tasks", "--sort", "sideways"]), ("--sort", "sideways")),
    ]
    for (_, needles), result in zip(cases, run_cli(tmp_path, *(call for call, _ in cases)), strict=True):
        result.assert_error(64, *needles)
    assert not (tmp_path / "data").exists()


def test_setting_errors_still_exit_2(tmp_path: Path) -> None:
    """A bad setting is not a usage error: it keeps exit code 2."""
    run_one(tmp_path, "config", env={"AIFARM_HEARTBEAT_INTERVAL": "1h-5m"}).assert_error(
        2, "heartbeat_interval", "'1h-5m'", "1h30m")


# --- shell completion ------------------------------------------------------------------------------------------------


def _complete(tmp_path: Path, line: str) -> list[str]:
    """What argcomplete offers for a command line, through its protocol: environment in, fd 8 out."""
    read_end, write_end = os.pipe()
    env = {**_base_env(tmp_path), "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_IFS": "\v", "COMP_TYPE": "9"}
    try:
        # the child gets the pipe as its fd 8 (this process's fd 8 may be in use)
        proc = subprocess.Popen([sys.executable, "-m", "app"], env=env, pass_fds=(write_end, 8), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=tmp_path, preexec_fn=lambda: os.dup2(write_end, 8))
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        offered = reader.read().decode()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    return [word.strip() for word in offered.split("\v")] if offered else []


def test_completion_offers_commands(tmp_path: Path) -> None:
    """`aifarm ta<TAB>` offers tasks and task; `aifarm db up<TAB>` offers upgrade."""
    assert sorted(_complete(tmp_path, "aifarm ta")) == ["task", "tasks"]
    assert _complete(tmp_path, "aifarm db up") == ["upgrade"]


@pytest.mark.parametrize(("shell", "needle"), [
    ("bash", "complete -o nospace -o default -o bashdefault -F _python_argcomplete aifarm"),
    ("zsh", "compdef _python_argcomplete aifarm"),
    ("fish", "complete --command aifarm"),
])
def test_completion_prints_the_shell_code(tmp_path: Path, shell: str, needle: str) -> None:
    """`aifarm completion SHELL` prints the code register-python-argcomplete would, and touches no data dir."""
    env = {**_base_env(tmp_path), "AIFARM_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "app", "completion", shell], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert needle in done.stdout
    assert not (tmp_path / "data").exists()


# --- --json outcomes -------------------------------------------------------------------------------------------------


def test_json_outcomes_of_database_commands(tmp_path: Path) -> None:
    """db upgrade, cancel, retry, db backup/restore, dataset-hosts add/remove, join, leave, prefs and stop: one object."""
    farm = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    upgraded = _json_object(run_one(tmp_path, "db", "upgrade", "--json", "--database-url", farm))
    assert upgraded["upgraded"] is True and upgraded["from_revision"] is None and upgraded["to_revision"]
    again = _json_object(run_one(tmp_path, "db", "upgrade", "--json", "--database-url", farm))
    assert again["upgraded"] is False and again["from_revision"] == again["to_revision"] == upgraded["to_revision"]

    task_id = int(run_one(tmp_path, "submit", _task_file(tmp_path), "--database-url", farm).assert_ok().stdout)
    assert _json_object(run_one(tmp_path, "cancel", str(task_id), "--json", "--database-url", farm)) == {
        "task_id": task_id, "action": "cancel", "status": "failed"}
    run_one(tmp_path, "cancel", str(task_id), "--json", "--database-url", farm).assert_error(6, "only pending or running")
    assert _json_object(run_one(tmp_path, "retry", str(task_id), "--json", "--database-url", farm)) == {
        "task_id": task_id, "action": "retry", "status": "pending"}
    run_one(tmp_path, "retry", "999", "--json", "--database-url", farm).assert_error(5, "task 999 does not exist")

    backup_file = tmp_path / "farm-backup.db"
    backup = _json_object(run_one(tmp_path, "db", "backup", str(backup_file), "--json", "--database-url", farm))
    assert backup["path"] == str(backup_file) and backup["bytes"] == backup_file.stat().st_size and backup["compressed"] is False
    restored = _json_object(run_one(tmp_path, "db", "restore", str(backup_file), "--force", "--json", "--database-url", farm))
    assert restored["path"] == str(backup_file) and restored["replaced_rows"] > 0 and restored["current"] is True

    for action, changed in (("add", True), ("add", False), ("remove", True)):
        outcome = _json_object(run_one(tmp_path, "farm", "dataset-hosts", action, "data.example.org", "--json",
                                       "--database-url", farm))
        assert outcome == {"farm_name": "default", "host": "data.example.org", "action": action, "changed": changed}
    run_one(tmp_path, "farm", "dataset-hosts", "remove", "data.example.org", "--json", "--database-url", farm).assert_error(
        2, "is not one of")

    joined = _json_object(run_one(tmp_path, "join", farm, "--farm-name", "lab", "--json"))
    config_file = str(tmp_path / "data" / "config.toml")
    assert joined.pop("database").endswith(f"{tmp_path}/farm.sqlite3")
    assert joined == {"action": "join", "farm_name": "lab", "config_file": config_file, "restart_needed": True}
    assert _json_object(run_one(tmp_path, "prefs", "set", "cpu_threads", "2", "--json")) == {
        "name": "cpu_threads", "action": "set", "value": "2", "applied_now": False}
    assert _json_object(run_one(tmp_path, "prefs", "unset", "cpu_threads", "--json")) == {
        "name": "cpu_threads", "action": "unset", "value": None, "applied_now": False}
    assert _json_object(run_one(tmp_path, "leave", "--json")) == {
        "action": "leave", "farm_name": None, "database": "embedded", "config_file": config_file, "restart_needed": True}
    assert _json_object(run_one(tmp_path, "stop", "--json")) == {"pid": None, "was_running": False, "stopped": False}


def test_json_outcomes_of_agent_commands(tmp_path: Path) -> None:
    """pause, resume, prefs set and stop against a running agent each print one JSON object."""
    farm = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    run_one(tmp_path, "db", "upgrade", "--database-url", farm).assert_ok()
    agent = AgentProcess(tmp_path, "a", "--database-url", farm)
    data = ("--data-dir", str(agent.data_dir))
    try:
        paused = _json_object(run_one(tmp_path, "pause", "--for", "1h30m", "--json", *data))
        assert paused["paused"] is True and paused["until"] and paused["finish_current"] is False
        assert paused["summary"].startswith("paused until")
        resumed = _json_object(run_one(tmp_path, "resume", "--json", *data))
        assert resumed == {"paused": False, "until": None, "finish_current": False, "summary": "donating"}
        assert _json_object(run_one(tmp_path, "prefs", "set", "cpu_threads", "1", "--json", *data))["applied_now"] is True
        stopped = _json_object(run_one(tmp_path, "stop", "--json", *data))
        assert stopped == {"pid": agent.proc.pid, "was_running": True, "stopped": True}
    finally:
        agent.stop()


# --- progress --------------------------------------------------------------------------------------------------------


def _drain(master: int, into: list[bytes]) -> None:
    """Read a pseudo-terminal's output until the other side is closed."""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def _open_pty() -> tuple[int, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    return master, slave


def _wait_submit(tmp_path: Path, farm: str, stderr: int | IO[bytes], *extra: str) -> subprocess.Popen[bytes]:
    """`aifarm submit --wait` running in the background, once it has printed the task id."""
    env = {**_base_env(tmp_path), "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    return subprocess.Popen([sys.executable, "-m", "app", "submit", _task_file(tmp_path), "--wait", "--database-url", farm,
                             "--data-dir", str(tmp_path / "data"), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=stderr, cwd=tmp_path)


def _cancel_after_start(tmp_path: Path, farm: str, proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    task_id = int(proc.stdout.readline())
    time.sleep(2.5)  # a few polls of the follower
    run_one(tmp_path, "cancel", str(task_id), "--database-url", farm).assert_ok()
    assert proc.wait(timeout=60) == 1  # the task ended as failed
    return task_id


def test_submit_wait_on_a_pipe_prints_plain_lines(tmp_path: Path) -> None:
    """With stderr not a terminal, `submit --wait` prints whole lines with rate and ETA, never a carriage return."""
    farm = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    run_one(tmp_path, "db", "upgrade", "--database-url", farm).assert_ok()
    proc = _wait_submit(tmp_path, farm, subprocess.PIPE)
    task_id = _cancel_after_start(tmp_path, farm, proc)
    assert proc.stderr is not None
    text = proc.stderr.read().decode()
    assert "\r" not in text and "\x1b" not in text, text
    lines = text.splitlines()
    assert lines[0].startswith(f"task {task_id}: 0.0%, ") and "ETA" in lines[0] and "pending" in lines[0], text
    assert any(line.startswith(f"task {task_id}: ") and line.endswith("failed") for line in lines), text
    assert lines[-1] == "cancelled by the user", text


def test_submit_wait_quiet_prints_nothing(tmp_path: Path) -> None:
    """`submit --wait --quiet` prints no progress at all."""
    farm = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    run_one(tmp_path, "db", "upgrade", "--database-url", farm).assert_ok()
    proc = _wait_submit(tmp_path, farm, subprocess.PIPE, "--quiet")
    _cancel_after_start(tmp_path, farm, proc)
    assert proc.stderr is not None
    assert proc.stderr.read() == b""


def test_submit_wait_on_a_terminal_draws_a_bar(tmp_path: Path) -> None:
    """On a terminal `submit --wait` redraws one bar in place, with rate and ETA columns."""
    farm = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    run_one(tmp_path, "db", "upgrade", "--database-url", farm).assert_ok()
    master, slave = _open_pty()
    output: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(master, output), daemon=True)
    reader.start()
    try:
        proc = _wait_submit(tmp_path, farm, slave)
        os.close(slave)
        task_id = _cancel_after_start(tmp_path, farm, proc)
        reader.join(timeout=10)
    finally:
        os.close(master)
    text = b"".join(output).decode(errors="replace")
    assert f"task {task_id}" in text and "ETA" in text and "rate" in text, text
    assert "\x1b[" in text and "━" in text, text  # cursor control and a drawn bar, not plain lines
    assert "failed" in text


def test_progress_display_bytes_on_a_pipe_and_a_terminal(tmp_path: Path) -> None:
    """A download's display: plain lines with MB, MB/s and ETA on a pipe; a bar on a pseudo-terminal; nothing when quiet."""
    from app.textui import BYTES, PERCENT, ProgressDisplay

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        with ProgressDisplay("model.pt", 10 * 2**20, BYTES, stream=stream, every=3600) as shown:
            for done in range(0, 10 * 2**20 + 1, 2**20):
                shown.update(done)
    with os.fdopen(read_end) as reader:
        lines = reader.read().splitlines()
    assert lines[0].startswith("model.pt: 0.0/10.0 MB, rate ?, ETA ?"), lines
    assert lines[-1].startswith("model.pt: 10.0/10.0 MB, ") and "MB/s" in lines[-1], lines
    assert len(lines) == 2  # one line when it starts, one at the end: the next is due only after `every` seconds

    master, slave = _open_pty()
    output: list[bytes] = []
    with open(slave, "w", closefd=True) as terminal:
        with ProgressDisplay("model.pt", 10 * 2**20, BYTES, stream=terminal) as shown:
            shown.update(5 * 2**20)
            time.sleep(0.2)
            shown.update(10 * 2**20)
    _drain(master, output)  # what the closed terminal still holds, then EIO
    os.close(master)
    text = b"".join(output).decode(errors="replace")
    assert "model.pt" in text and "━" in text and "\x1b[" in text and "ETA" in text, text

    quiet_read, quiet_write = os.pipe()
    with os.fdopen(quiet_write, "w") as stream:
        with ProgressDisplay("task 1", 100.0, PERCENT, stream=stream, quiet=True) as shown:
            shown.update(50.0, "running")
    with os.fdopen(quiet_read) as reader:
        assert reader.read() == ""
