"""Figure 4, the pages: each dashboard page and list API of an agent whose farm database holds 100,000 tasks,
300,000 assignments, 10,000 clients and 5,000,000 performance-metric rows; p50/p99 per page."""

from __future__ import annotations

import http.cookiejar
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks import dbserver
from benchmarks.common import Agent, Figure
from benchmarks.seed_queries import populate

TARGET_MS = 50.0


def measure(quick: bool = False, scale: float | None = None) -> list[Figure]:
    """Populate, start an agent on that database, and time every page signed in (20 requests each, quick: 5)."""
    runs = 5 if quick else 20
    scale = scale if scale is not None else 1 / 20 if quick else 1.0
    with dbserver.running(buffer_pool_mb=max(256, round(2048 * scale / 64) * 64)) as server:
        url = dbserver.fresh_database(server, "bench_pages")
        counts = populate(url, scale)
        with tempfile.TemporaryDirectory() as name:
            # Long retentions (the longest the settings allow): the generated history is old, and the agent's own
            # sweeps must not delete it mid-run.
            keep = {"AIFARM_RETENTION_DAYS": "36500", "AIFARM_LOG_RETENTION_DAYS": "36500",
                    "AIFARM_METRICS_RETENTION_DAYS": "36500", "AIFARM_ORPHAN_AFTER": "365d",
                    "AIFARM_INACTIVE_AFTER": "30d"}
            agent = Agent(Path(name), "a", "--database-url", url, "--heartbeat-interval", "2s",
                          env={"AIFARM_PAUSED": "true", **keep})
            try:
                opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
                opener.open(agent.signin_url, timeout=30).close()
                token = (agent.data_dir / "api_token").read_text().strip()
                some_task = agent.api_get("/api/v1/tasks?status=running&limit=1")["tasks"][0]["id"]
                some_client = agent.api_get("/api/v1/clients")["clients"][0]["id"] if scale < 0.2 else None
                pages = ["/", "/tasks", "/tasks?status=running", f"/tasks/{some_task}", "/clients", "/models",
                         "/operations", "/settings", "/api/v1/tasks", f"/api/v1/tasks/{some_task}", "/api/v1/stats"]
                if some_client:
                    pages.append(f"/clients/{some_client}")
                results = []
                for page in pages:
                    times = []
                    for _ in range(runs):
                        request = urllib.request.Request(agent.url.rstrip("/") + page,
                                                         headers={"Authorization": f"Bearer {token}"}
                                                         if page.startswith("/api/") else {})
                        begin = time.perf_counter()
                        try:
                            with opener.open(request, timeout=120) as response:
                                response.read()
                        except urllib.error.HTTPError as exc:
                            raise RuntimeError(f"{page} answered HTTP {exc.code}: {exc.read()[:300]!r}") from None
                        times.append((time.perf_counter() - begin) * 1000)
                    results.append((page, times))
            finally:
                agent.stop()
    sizes = ", ".join(f"{n:,} {table}" for table, n in counts.items())
    figures = []
    for page, times in results:
        p50, p99 = dbserver.percentile(times, 50), dbserver.percentile(times, 99)
        figures.append(Figure(f"page p99 at scale: {page}", p99, "ms", f"<= {TARGET_MS:g} ms", p99 <= TARGET_MS,
                              f"p50 {p50:.1f} ms, {len(times)} requests; {sizes}"))
    return figures


if __name__ == "__main__":
    for figure in measure("--quick" in sys.argv):
        print(figure.row(), flush=True)
