"""Real agent processes for tests: start `aifarm run`, read its files, ask its API, stop or kill it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

URL_LINE = re.compile(r"agent (\S+) running; dashboard at (http://\S+)")


def agent_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child agent: no AIFARM_* from the caller, no user config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFARM_")}
    env["AIFARM_CONFIG"] = str(tmp_path / "no-config.toml")
    env.update(extra or {})
    return env


class AgentProcess:
    """One `aifarm run` child process with its own data dir."""

    def __init__(self, tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.data_dir = tmp_path / name
        self.log_path = tmp_path / f"{name}.log"
        command = [*(prefix or []), sys.executable, "-m", "app", "run", "--headless", "--data-dir", str(self.data_dir),
                   "--port", "0", "--peer-port", "0", *args]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=agent_env(tmp_path, env))
        self.client_id, self.url = self._wait_started()

    def _wait_started(self, timeout: float = 60) -> tuple[str, str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = URL_LINE.search(line)
            if match:
                self.signin_url = self.proc.stdout.readline().rsplit(" ", 1)[-1].strip()
                return match.group(1), match.group(2)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"agent did not start (exit {self.proc.returncode}):\n{self.log()}")

    def log(self) -> str:
        """Everything the agent wrote to stderr so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    @property
    def api_token(self) -> str:
        """The data dir's API token."""
        return (self.data_dir / "api_token").read_text().strip()

    @property
    def peer_port(self) -> int:
        """The peer API port it bound."""
        return int(json.loads((self.data_dir / "agent.json").read_text())["peer_port"])

    def api(self, path: str) -> Any:
        """GET an API path with the token; returns the JSON body."""
        request = urllib.request.Request(self.url.rstrip("/") + path, headers={"Authorization": f"Bearer {self.api_token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def page(self, path: str = "/") -> tuple[int, str]:
        """GET a dashboard page as a signed-in browser would (cookie from the one-time link)."""
        if getattr(self, "_browser", None) is None:
            import http.cookiejar

            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            opener.open(self.signin_url, timeout=10).close()
            self._browser = opener
        try:
            with self._browser.open(self.url.rstrip("/") + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Stop with a signal and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"agent did not stop within {timeout} s:\n{self.log()}") from None
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9."""
        self.proc.kill()
        self.proc.wait()
        self._log.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy; returns its value or fails naming what was awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET a URL; returns (status, body) also for error statuses."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
