"""Shared pieces of the benchmarks: result rows, the machine's description, agent processes."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
URL_LINE = re.compile(r"agent (\S+) running; dashboard at (http://\S+)")


@dataclass
class Figure:
    """One measured figure with its target."""

    name: str
    value: float
    unit: str
    target: str
    met: bool
    detail: str = ""

    def row(self) -> str:
        """A markdown table row."""
        mark = "met" if self.met else "MISSED"
        return f"| {self.name} | {self.value:,.2f} {self.unit} | {self.target} | {mark} | {self.detail} |"


def machine() -> str:
    """One line describing this machine."""
    freq = psutil.cpu_freq()
    return (
        f"{platform.node()}: {platform.system()} {platform.release()}, {psutil.cpu_count()} CPUs"
        f"{f' @ {freq.max or freq.current:.0f} MHz' if freq else ''}, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}"
    )


def clean_env(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment without the caller's AIFARM_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFARM_")}
    env["AIFARM_CONFIG"] = str(tmp / "none.toml")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


class Agent:
    """An `aifarm run` process started for a benchmark."""

    def __init__(self, tmp: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--headless", "--data-dir", str(tmp / name), "--port", "0",
             "--peer-port", "0", *args],
            stdout=subprocess.PIPE, stderr=(tmp / f"{name}.stderr").open("w"), text=True, env=clean_env(tmp, env),
        )
        self.data_dir = tmp / name
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = URL_LINE.search(line)
            if match:
                self.client_id, self.url = match.group(1), match.group(2)
                self.ready = time.perf_counter()
                self.signin_url = self.proc.stdout.readline().rsplit(" ", 1)[-1].strip()
                return
        said = (tmp / f"{name}.stderr").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError("agent did not start: " + (" / ".join(said) or f"exit {self.proc.wait()}"))

    def api_get(self, path: str) -> Any:
        """GET an API path with the data dir's token."""
        import json
        import urllib.request

        token = (self.data_dir / "api_token").read_text().strip()
        request = urllib.request.Request(self.url.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def rss_mb(self) -> float:
        """Resident memory of the agent process alone, in MB."""
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        """Ctrl-C and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=30)
