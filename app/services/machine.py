"""This machine's load in performance_metrics: CPU, RAM and each GPU, every METRICS_INTERVAL seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from app import inventory
from app.db.engine import Database
from app.db.queries import metrics as metric_queries
from app.errors import DatabaseUnavailable
from app.services.donation import Donation

log = logging.getLogger(__name__)

METRICS_INTERVAL = 10.0
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)


class HasTask(Protocol):
    """The running task, for tagging the rows."""

    task_id: int


class MachineMetrics:
    """Samples the machine's load and records it, tagged with the running task."""

    def __init__(self, db: Database, client_id: str, donation: Donation, running: Callable[[], HasTask | None]) -> None:
        self.db = db
        self.client_id = client_id
        self.donation = donation
        self.running = running

    async def sample(self) -> list[tuple[str, float]]:
        """The values to record now (GPU readings refresh the inventory the dashboard shows)."""
        import psutil

        values = [("cpu_percent", psutil.cpu_percent(interval=None)),
                  ("ram_used_mb", psutil.virtual_memory().used / 2**20)]
        inv = self.donation.inventory
        if inv["gpus"]:
            inv["gpus"] = await asyncio.to_thread(inventory.gpu_info) or inv["gpus"]
            for gpu in inv["gpus"]:
                if gpu.get("utilization_pct") is not None:
                    values.append((f"gpu{gpu['index']}_utilization_pct", gpu["utilization_pct"]))
                values.append((f"gpu{gpu['index']}_memory_used_mb", gpu.get("memory_used_mb") or 0))
        return values

    async def loop(self) -> None:
        """Record a sample every METRICS_INTERVAL; a database outage skips samples."""
        import psutil

        psutil.cpu_percent(interval=None)
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            values = await self.sample()
            running = self.running()
            try:
                async with self.db.begin() as conn:
                    await metric_queries.record_metrics(conn, self.client_id, values,
                                                        task_id=running.task_id if running else None)
            except DB_ERRORS as exc:
                log.debug("performance metrics not recorded: %s", exc)
