"""Scheduled maintenance: each sweep runs on one agent at a time, under a lease in `maintenance_runs`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db.engine import Database
from app.db.queries import maintenance as maintenance_queries
from app.db.queries import operations as ops
from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

SWEEPS = ("inactive_clients", "orphaned_assignments", "old_tasks", "old_logs", "old_metrics")
HOURLY = 3600.0
LOOP_SECONDS = 1.0
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)

EventSink = Callable[[str, str], None]


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    args: tuple[Any, ...] = getattr(orig, "args", ())
    message = str(args[1]) if len(args) > 1 else str(orig)
    return (message.splitlines() or [type(orig).__name__])[0]


def describe_counts(sweep: str, counts: dict[str, Any], *, dry_run: bool = False) -> str:
    """One line for a sweep's result: 'old_logs: deleted 3 task_logs, 0 client_logs'."""
    if "skipped" in counts:
        return f"{sweep}: skipped ({counts['skipped']})"
    if "error" in counts:
        return f"{sweep}: failed ({counts['error']})"
    verb = "mark inactive" if sweep == "inactive_clients" else "delete"
    if not dry_run:
        verb = "marked inactive" if sweep == "inactive_clients" else "deleted"
    else:
        verb = f"would {verb}"
    parts = ", ".join(f"{count} {name}" for name, count in counts.items())
    return f"{sweep}: {verb} {parts}"


class Maintenance:
    """The farm's periodic clean-up; any number of agents may run it, each sweep runs on one at a time."""

    def __init__(self, db: Database, settings: Settings, client_id: str, admin_db: Database | None = None,
                 on_event: EventSink | None = None) -> None:
        self.db = db
        self.settings = settings
        self.client_id = client_id
        self.admin_db = admin_db
        self.on_event = on_event
        self._not_before: dict[str, float] = {}  # monotonic time before which a sweep is surely not due

    # --- schedule ------------------------------------------------------------------------------------------

    def interval(self, sweep: str) -> float:
        """Seconds between two runs of a sweep, farm-wide."""
        if sweep == "inactive_clients":
            return max(1.0, min(self.settings.inactive_after / 4, 30.0))
        return HOURLY

    def lease_seconds(self, sweep: str) -> float:
        """How long a lease lasts: long enough for one run, short enough that a crashed holder blocks little."""
        if sweep == "inactive_clients":
            return max(5.0, 2 * self.interval(sweep))
        return 900.0

    # --- running -------------------------------------------------------------------------------------------

    async def run_due(self) -> dict[str, dict[str, Any]]:
        """Run every sweep whose interval has elapsed and whose lease this agent gets; returns their results."""
        results: dict[str, dict[str, Any]] = {}
        for sweep in SWEEPS:
            if time.monotonic() < self._not_before.get(sweep, 0.0):
                continue
            interval = self.interval(sweep)
            async with self.db.begin() as conn:
                leased = await ops.acquire_lease(conn, sweep, self.client_id, self.lease_seconds(sweep), every=interval)
                wait = interval if leased else await self._due_in(conn, sweep, interval)
            # Only saves statements: whether a sweep runs is always decided by acquire_lease.
            self._not_before[sweep] = time.monotonic() + max(LOOP_SECONDS, wait - LOOP_SECONDS)
            if leased:
                results[sweep] = await self._run_leased(sweep)
        return results

    async def _due_in(self, conn: Any, sweep: str, interval: float) -> float:
        row = await ops.get_run(conn, sweep)
        if row is None or row["last_run_at"] is None:
            return 0.0
        since = float((await ops.db_now(conn) - row["last_run_at"]).total_seconds())
        return min(interval, max(0.0, interval - since))

    async def run_all(self, dry_run: bool = False, force: bool = True) -> dict[str, dict[str, Any]]:
        """Run every sweep now (force) or those due; dry_run only counts and changes nothing, not even leases."""
        results: dict[str, dict[str, Any]] = {}
        for sweep in SWEEPS:
            if dry_run:
                results[sweep] = await self._sweep(sweep, dry_run=True)
                continue
            async with self.db.begin() as conn:
                leased = await ops.acquire_lease(conn, sweep, self.client_id, self.lease_seconds(sweep),
                                                 every=None if force else self.interval(sweep))
                row = None if leased else await ops.get_run(conn, sweep)
            if leased:
                results[sweep] = await self._run_leased(sweep)
            elif row is not None and row["holder"] not in (None, self.client_id) and row["lease_until"] is not None:
                results[sweep] = {"skipped": f"running on {row['holder']} until {row['lease_until']} UTC"}
            else:
                results[sweep] = {"skipped": "not due yet"}
        return results

    async def loop(self) -> None:
        """Forever: run what is due about every second; database errors are logged and the loop goes on."""
        failing = False
        while True:
            try:
                await self.run_due()
                failing = False
            except DB_ERRORS as exc:
                (log.debug if failing else log.warning)("maintenance skipped: %s", _first_line(exc))
                failing = True
            await asyncio.sleep(LOOP_SECONDS)

    async def history(self) -> list[dict[str, Any]]:
        """The maintenance_runs rows (lease, last run and result) with each sweep's interval, for the Operations page."""
        async with self.db.connect() as conn:
            rows = {row["sweep"]: row for row in await ops.list_runs(conn)}
        out = []
        for sweep in SWEEPS:
            row = rows.pop(sweep, None) or {"sweep": sweep, "holder": None, "lease_until": None,
                                            "last_run_at": None, "last_result": None}
            out.append({**row, "interval_seconds": self.interval(sweep)})
        return out + [{**row, "interval_seconds": None} for row in rows.values()]

    async def _run_leased(self, sweep: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self._sweep(sweep)
        except DatabaseUnavailable:
            raise  # the lease runs out by itself
        except SQLAlchemyError as exc:
            result = {"error": _first_line(exc)}
            log.warning("maintenance %s failed: %s", sweep, result["error"])
        async with self.db.begin() as conn:
            kept = await ops.finish_run(conn, sweep, self.client_id, result)
        if not kept:
            log.warning("maintenance %s outlasted its lease; another agent may have run it too", sweep)
        if "error" not in result:
            changed = sum(result.values())
            # Sweeps that removed nothing stay out of a volunteer's console; maintenance_runs keeps every result.
            (log.info if changed else log.debug)("maintenance %s", describe_counts(sweep, result))
            if changed and self.on_event is not None:
                self.on_event("info", self._event_text(sweep, result))
        return result

    def _event_text(self, sweep: str, counts: dict[str, int]) -> str:
        if sweep == "inactive_clients":
            return f"marked {counts['clients']} client(s) inactive (unseen for {self.settings.inactive_after:.0f} s)"
        return f"maintenance {describe_counts(sweep, counts)}"

    async def _sweep(self, sweep: str, dry_run: bool = False) -> dict[str, int]:
        settings = self.settings
        if sweep == "inactive_clients":
            async with (self.db.connect() if dry_run else self.db.begin()) as conn:
                changed = await maintenance_queries.mark_inactive_clients(
                    conn, older_than_seconds=settings.inactive_after, dry_run=dry_run)
            return {"clients": changed}
        writer = self.admin_db or self.db
        async with (writer.connect() if dry_run else writer.begin()) as conn:
            if sweep == "orphaned_assignments":
                return {"task_assignments": await maintenance_queries.delete_orphaned_assignments(
                    conn, older_than_seconds=settings.orphan_after, dry_run=dry_run)}
            if sweep == "old_tasks":
                cascaded = await maintenance_queries.old_task_dependents(conn, older_than_days=settings.retention_days)
                removed = await maintenance_queries.delete_old_tasks(
                    conn, older_than_days=settings.retention_days, dry_run=dry_run)
                return {"tasks": removed, **cascaded}
            if sweep == "old_logs":
                return await maintenance_queries.delete_old_logs(
                    conn, older_than_days=settings.log_retention_days, dry_run=dry_run)
            if sweep == "old_metrics":
                return await maintenance_queries.delete_old_metrics(
                    conn, older_than_days=settings.metrics_retention_days, dry_run=dry_run)
        raise ValueError(f"unknown sweep {sweep!r}")
