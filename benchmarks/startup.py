"""Figures 7 and 8: time from `aifarm run` to a dashboard answer, peer discovery time, and the idle agent's memory."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import Agent, Figure, clean_env


def _get(url: str, token: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return response.read()


def _first_answer(agent: Agent) -> float:
    while True:
        try:
            _get(agent.url + "healthz")
            return time.perf_counter() - agent.started
        except OSError:
            time.sleep(0.005)


def measure(quick: bool = False) -> list[Figure]:
    """Start-up to dashboard, peer appearance in the verified list, idle RSS."""
    runs = 1 if quick else 3
    starts, discoveries, rss = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            url = f"sqlite:///{tmp / 'farm.sqlite3'}"
            subprocess.run([sys.executable, "-m", "app", "db", "upgrade", "--database-url", url],
                           check=True, capture_output=True, env=clean_env(tmp))
            a = Agent(tmp, "a", "--database-url", url, "--heartbeat-interval", "1s")
            try:
                starts.append(_first_answer(a))
                token = (a.data_dir / "api_token").read_text().strip()
                b = Agent(tmp, "b", "--database-url", url, "--heartbeat-interval", "1s")
                try:
                    while True:
                        peers = json.loads(_get(a.url + "api/v1/peers", token))["peers"]
                        if any(p["client_id"] == b.client_id and p["verified"] for p in peers):
                            discoveries.append(time.perf_counter() - b.started)
                            break
                        time.sleep(0.02)
                    time.sleep(2)
                    rss.append(a.rss_mb())
                finally:
                    b.stop()
            finally:
                a.stop()
    start_p50 = statistics.median(starts)
    disc_p50 = statistics.median(discoveries)
    rss_max = max(rss)
    return [
        Figure("start-up: `aifarm run` to dashboard answer (median)", start_p50, "s", "<= 1 s", start_p50 <= 1.0,
               f"{runs} runs, max {max(starts):.2f} s"),
        Figure("discovery: peer start to verified in another agent (median)", disc_p50, "s", "<= 3 s", disc_p50 <= 3.0,
               f"{runs} runs, max {max(discoveries):.2f} s, includes the peer's own start-up"),
        Figure("footprint: idle agent RSS (agent process alone)", rss_max, "MB", "<= 80 MB", rss_max <= 80,
               "no torch in the agent process"),
    ]


if __name__ == "__main__":
    for figure in measure("--quick" in sys.argv):
        print(figure.row())
