"""The agent's log file: written by `aifarm run`, rotated by size, shown by `aifarm logs [-f]` and the dashboard."""

from __future__ import annotations

import logging
import logging.handlers
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.agentlog import BACKUPS, add_file_handler, follow, log_path
from tests.agent.harness import AgentProcess, agent_env, wait_for


def _aifarm(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=60, env=agent_env(tmp_path))


def test_agent_writes_its_log_and_logs_and_dashboard_show_it(tmp_path: Path) -> None:
    """`aifarm run` logs to DATA_DIR/logs/agent.log; `aifarm logs -n 3` and the Operations page show its end."""
    agent = AgentProcess(tmp_path, "a")
    try:
        path = log_path(agent.data_dir)
        wait_for(lambda: path.exists() and "running; dashboard at" in path.read_text(), 20, "the log file")
        done = _aifarm(tmp_path, agent.data_dir, "logs", "-n", "3")
        assert done.returncode == 0, done.stderr
        printed = done.stdout.splitlines()
        whole = path.read_text().splitlines()
        assert len(printed) == 3
        assert any(whole[i:i + 3] == printed for i in range(len(whole) - 2)), (printed, whole)  # the agent goes on logging
        status, body = agent.page("/operations")
        assert status == 200 and "Agent log" in body and "running; dashboard at" in body
    finally:
        agent.stop()
    assert "stopping" in path.read_text()


def test_logs_without_a_log_is_one_clear_error(tmp_path: Path) -> None:
    """No agent ever ran here: one `aifarm: error:` line naming the file, exit 5, no traceback."""
    done = _aifarm(tmp_path, tmp_path / "empty", "logs")
    assert done.returncode == 5
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("aifarm: error: no agent log yet at")


def test_logs_follow_prints_new_lines(tmp_path: Path) -> None:
    """`aifarm logs -f` prints lines written after it started."""
    data_dir = tmp_path / "d"
    path = log_path(data_dir)
    path.parent.mkdir(parents=True)
    path.write_text("old line\n")
    proc = subprocess.Popen([sys.executable, "-m", "app", "logs", "-f", "-n", "1", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_env(tmp_path))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "old line"
        time.sleep(1.0)
        with path.open("a") as handle:
            handle.write("new line 1\nnew line 2\n")
        assert proc.stdout.readline().strip() == "new line 1"
        assert proc.stdout.readline().strip() == "new line 2"
    finally:
        proc.terminate()
        proc.wait(10)


def test_log_file_rotates_by_size_and_follow_survives_rotation(tmp_path: Path) -> None:
    """The file handler keeps at most BACKUPS old files; follow() reopens the new file after a rotation."""
    handler = add_file_handler(tmp_path, logging.INFO)
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    handler.maxBytes = 2_000
    logger = logging.getLogger("aifarm.test.rotation")
    logger.setLevel(logging.INFO)
    seen: list[str] = []
    lines = follow(log_path(tmp_path), poll=0.02)
    reader = threading.Thread(target=lambda: [seen.append(line) for line in lines], daemon=True)
    try:
        logger.info("first")
        time.sleep(0.3)
        reader.start()
        time.sleep(0.3)
        for n in range(200):
            logger.info("message %03d %s", n, "x" * 40)
            if n % 20 == 0:
                time.sleep(0.1)
        wait_for(lambda: any("message 199" in line for line in seen), 10, "the last message")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in log_path(tmp_path).parent.iterdir())
    assert files[0] == "agent.log" and len(files) == 1 + BACKUPS, files
    numbers = [int(line.split("message ")[1][:3]) for line in seen if "message " in line]
    assert numbers[-1] == 199 and numbers == sorted(numbers)
