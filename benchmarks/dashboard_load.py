"""Figure 5: the dashboard under load while a task trains: requests/s, p99, and training's slowdown."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.common import Agent, Figure, clean_env
from benchmarks.training import _curve, _submit, _task, _wait
from tests.training.e2e import task


async def _load(agent: Agent, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """GET the overview page (signed in) and the task list API alternately at `rate` per second."""
    token = (agent.data_dir / "api_token").read_text().strip()
    latencies: list[float] = []
    errors = 0
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        signin = agent.signin_url
        async with session.get(signin) as response:
            await response.read()
        urls = [(agent.url, {}), (agent.url + "api/v1/tasks", {"Authorization": f"Bearer {token}"})]
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter()

        async def one(url: str, headers: dict[str, str]) -> None:
            nonlocal errors
            begin = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - begin)

        sent = 0
        while (now := time.perf_counter() - start) < seconds:
            due = int(now * rate) + 1
            while sent < due:
                url, headers = urls[sent % 2]
                task_ = asyncio.create_task(one(url, headers))
                pending.add(task_)
                task_.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
    return latencies, errors, len(latencies) / elapsed


def _rate_between(points: list[dict], start: float, end: float, stamps: dict[int, float]) -> float:
    values = [p["value"] for p in points if p["name"] == "samples_per_sec" and start <= stamps.get(p["id"], 0) <= end]
    return statistics.median(values) if values else float("nan")


def measure(quick: bool = False) -> list[Figure]:
    """Load at 200 req/s for 20 s (quick: 5 s) while a 1-rank task trains; compare with a quiet window."""
    seconds = 5.0 if quick else 20.0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url = f"sqlite:///{tmp / 'farm.sqlite3'}"
        subprocess.run([sys.executable, "-m", "app", "db", "upgrade", "--database-url", url], check=True,
                       capture_output=True, env=clean_env(tmp))
        agent = Agent(tmp, "a", "--database-url", url, "--heartbeat-interval", "2s")
        stamps: dict[int, float] = {}
        try:
            task_id = _submit(tmp, url, _task("loaded", epochs=400, n_clients=1, checkpoint="1000 steps"))
            _wait(lambda: len(_curve(url, task_id)) > 10, 300)

            def stamp() -> None:
                for point in _curve(url, task_id):
                    stamps.setdefault(point["id"], time.monotonic())

            quiet_start = time.monotonic()
            while time.monotonic() - quiet_start < seconds + 4:
                stamp()
                time.sleep(0.5)
            quiet_end = time.monotonic()
            latencies, errors, achieved = asyncio.run(_load(agent, 200.0, seconds))
            loaded_end = time.monotonic()
            for _ in range(8):
                stamp()
                time.sleep(0.5)
            points = _curve(url, task_id)
            status = task(url, task_id)["status"]
        finally:
            agent.stop()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    p50 = latencies[len(latencies) // 2] * 1000
    quiet = _rate_between(points, quiet_start + 2, quiet_end, stamps)
    loaded = _rate_between(points, quiet_end + 2, loaded_end + 2, stamps)
    slowdown = (1 - loaded / quiet) * 100 if quiet == quiet and loaded == loaded else float("nan")
    return [
        Figure("dashboard under load: p99 latency at 200 req/s (overview page + task API)", p99, "ms", "< 50 ms",
               p99 < 50 and achieved >= 190, f"achieved {achieved:.0f} req/s, p50 {p50:.1f} ms, {errors} errors, "
                                             f"{len(latencies)} requests while a task trained ({status})"),
        Figure("dashboard under load: training slowed by", slowdown, "%", "<= 5 %", slowdown <= 5,
               f"samples/s {quiet:,.0f} quiet, {loaded:,.0f} under load (load generator shares the 2 cores)"),
    ]


if __name__ == "__main__":
    for figure in measure("--quick" in sys.argv):
        print(figure.row(), flush=True)
