"""Every database read and write of one run: batched reports, checkpoints, completion and settling, all fenced by
the attempt's generation, each waiting out a database outage while the worker keeps training."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from app.db.engine import Database
from app.db.queries import checkpoints as checkpoint_queries
from app.db.queries import claims as claim_queries
from app.db.queries import dataset_hosts as dataset_host_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.db.queries import models as model_queries
from app.errors import DatabaseUnavailable, Fenced
from app.scheduling import claiming
from app.scheduling.decide import is_elastic
from app.training.context import Outcome, RunContext
from app.training.messages import Finished, Progress

log = logging.getLogger("app.training.run")

DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)
T = TypeVar("T")


@dataclass
class Reports:
    """What the worker reported since the last flush."""

    progress: Progress | None = None
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    perf: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Completion:
    """The coordinator's end of a task: the model it registers and the task's final result."""

    url: str
    sha256: str
    model_config: dict[str, Any]
    result: dict[str, Any]


class RunRecorder:
    """The run's only door to the database."""

    def __init__(self, db: Database, ctx: RunContext) -> None:
        self.db = db
        self.ctx = ctx
        self.generation = ctx.generation  # the generation this rank writes as; moves on when its group regroups
        self.coordinator = ctx.coordinator
        self.size = ctx.formation.n_clients
        self.contributions: dict[str, float | None] | None = None  # elastic: samples per machine, from rank 0
        self.reports = Reports()
        self.completed = False
        self.sync: str | None = None  # the group's sync mode and why, for the task's result
        self.last_traffic: dict[str, float | None] = {}

    def traffic(self, finished: Finished | None = None) -> dict[str, Any]:
        """The sync choice and the bytes per step and utilisation (the attempt's when finished, else the last
        reported), for the task's result."""
        figures = self.last_traffic
        if finished is not None and finished.bytes_per_step is not None:
            figures = {"bytes_per_step": finished.bytes_per_step, "utilisation": finished.utilisation}
        shown: dict[str, Any] = {k: v for k, v in figures.items() if v is not None}
        if self.sync:
            shown["sync"] = self.sync
        formation = self.ctx.formation
        if formation.elastic:
            shown["elastic"] = {"members": self.size, "min": formation.min_clients, "max": formation.max_clients,
                                "contributions": {k: int(v or 0) for k, v in (self.contributions or {}).items()}}
        return shown

    async def retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a database operation, waiting out an outage (the worker keeps training meanwhile); Fenced passes through."""
        delay = 0.5
        while True:
            try:
                return await operation()
            except Fenced:
                raise
            except DB_ERRORS as exc:
                log.warning("task %s: %s waits for the database: %s", self.ctx.task_id, what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def log(self, level: str, message: str) -> None:
        """A task log line: to this machine's log now, to task_logs with the next flush."""
        getattr(log, level if level in ("warning", "error") else "info")(
            "task %s: %s", self.ctx.task_id, message.splitlines()[0] if message else "")
        self.reports.logs.append((level, message))

    # ----- reads -----

    async def resume_candidates(self) -> list[dict[str, Any]]:
        """Full checkpoints of the task, newest first."""
        async with self.db.connect() as conn:
            return await checkpoint_queries.resume_candidates(conn, self.ctx.task_id, self.ctx.client_id)

    async def rank_state(self, step: int) -> dict[str, Any] | None:
        """This rank's own state file saved at `step`, if one was recorded."""
        async with self.db.connect() as conn:
            return await checkpoint_queries.rank_state(conn, self.ctx.task_id, self.ctx.rank, step)

    def follow(self, generation: int, rank: int, size: int) -> None:
        """Write as this rank of a newer generation of the same group (an elastic group regrouped)."""
        self.generation, self.coordinator, self.size = generation, rank == 0, size

    async def formation(self) -> claiming.Formation | None:
        """The task's current group; None while the database is away or the task has no group."""
        try:
            async with self.db.connect() as conn:
                return await claiming.formation_of(conn, self.ctx.task_id)
        except DB_ERRORS:
            return None

    async def current_run(self) -> dict[str, Any] | None:
        """The task's run row (generation, rendezvous); None while the database is away."""
        try:
            async with self.db.connect() as conn:
                return await claim_queries.get_run(conn, self.ctx.task_id)
        except DB_ERRORS:
            return None

    async def dataset_hosts(self) -> list[str]:
        """The farm's allowed dataset hosts."""
        async def read() -> list[str]:
            async with self.db.connect() as conn:
                return await dataset_host_queries.list_hosts(conn, self.ctx.farm_name)

        return await self.retrying("reading the farm's dataset hosts", read)

    # ----- writes -----

    async def set_rank(self, what: str, **values: Any) -> None:
        """Update this rank's assignment of the current generation."""
        async def write() -> None:
            async with self.db.begin() as conn:
                await claim_queries.set_assignment(conn, self.ctx.task_id, self.ctx.client_id, self.generation,
                                                   **values)

        await self.retrying(what, write)

    async def publish_rendezvous(self, host: str, port: int) -> None:
        """Rank 0 says where the group meets."""
        async def publish() -> None:
            async with self.db.begin() as conn:
                await claim_queries.publish_rendezvous(conn, self.ctx.task_id, self.generation, self.ctx.client_id,
                                                       host, port)

        await self.retrying("publishing the rendezvous", publish)

    async def checkpoint(self, relative: str, kind: str, metrics: dict[str, Any], *, set_task_path: bool) -> list[str]:
        """Record a checkpoint file; returns the older regular checkpoints to delete."""
        keep = int(self.ctx.config.get("keep_checkpoints", 3))

        async def record() -> list[str]:
            async with self.db.begin() as conn:
                await checkpoint_queries.record(conn, task_id=self.ctx.task_id, generation=self.generation,
                                                client_id=self.ctx.client_id, path=relative, kind=kind, metrics=metrics,
                                                set_task_path=set_task_path)
                return await checkpoint_queries.prune_regular(conn, self.ctx.task_id, self.ctx.client_id, keep)

        return await self.retrying(f"recording the {kind} checkpoint", record)

    async def complete(self, completion: Completion) -> str:
        """Register the model version and complete the task, as this generation's coordinator; returns the version."""
        ctx, name = self.ctx, self.ctx.config["name"]

        async def complete() -> str:
            async with self.db.begin() as conn:
                await claim_queries.check_fence(conn, ctx.task_id, self.generation, ctx.client_id)
                version = await model_queries.register(conn, name=name, url=completion.url, sha256=completion.sha256,
                                                       config=completion.model_config)
                await claim_queries.update_task_fenced(conn, ctx.task_id, self.generation, ctx.client_id,
                                                       {"status": "completed", "result": completion.result})
                await log_queries.add_task_log(conn, ctx.task_id, ctx.client_id, "info",
                                               f"completed: model {name} version {version} ({completion.url})")
                return version

        version = await self.retrying("registering the model and completing the task", complete)
        self.completed = True
        return version

    async def settle(self, outcome: Outcome) -> None:
        """End the attempt for everyone when this rank failed or was stopped (the generation fence makes it once);
        from an elastic group only this member leaves while min_clients remain."""
        if outcome.kind in ("completed", "fenced"):
            return
        ctx = self.ctx
        for _ in range(30):
            try:
                async with self.db.begin() as conn:
                    if outcome.kind == "error":
                        await claiming.mark_error(conn, ctx.task_id, self.generation, outcome.reason)
                        return
                    if is_elastic(ctx.config):  # only this member leaves; the group goes on while it keeps min_clients
                        left = await claiming.leave(conn, ctx.task_id, self.generation, [ctx.client_id],
                                                    outcome.reason, failure=outcome.kind == "failed",
                                                    max_attempts=ctx.max_attempts)
                        status = left.status
                    else:
                        status = await claiming.end_attempt(conn, ctx.task_id, self.generation, outcome.reason,
                                                            failure=outcome.kind == "failed",
                                                            max_attempts=ctx.max_attempts)
                    if status:
                        await log_queries.add_task_log(conn, ctx.task_id, ctx.client_id, "warning",
                                                       f"attempt {self.generation} ended: {outcome.reason}; task {status}")
                return
            except DB_ERRORS as exc:
                log.warning("cannot settle task %s yet: %s", ctx.task_id, exc)
                await asyncio.sleep(2.0)

    async def flush(self) -> Fenced | None:
        """Write the reports since the last flush; they stay for the next try while the database is away.

        Returns the refusal when this generation no longer owns the task (only the progress is refused then)."""
        reports = self.reports
        progress, logs, perf, curve = reports.progress, list(reports.logs), list(reports.perf), list(reports.curve)
        if progress is None and not logs and not perf and not curve:
            return None
        try:
            async with self.db.begin() as conn:
                await self._write_lines(conn, logs, perf, curve)
                fenced = await self._write_progress(conn, progress) if progress is not None and not self.completed else None
        except DB_ERRORS as exc:
            log.debug("task %s: flush postponed: %s", self.ctx.task_id, exc)
            return None
        del reports.logs[: len(logs)]
        del reports.perf[: len(perf)]
        del reports.curve[: len(curve)]
        if reports.progress is progress:
            reports.progress = None
        return fenced

    async def _write_lines(self, conn: Any, logs: list[tuple[str, str]], perf: list[tuple[str, float]],
                           curve: list[tuple[int, dict[str, float]]]) -> None:
        ctx = self.ctx
        for level, message in logs:
            await log_queries.add_task_log(conn, ctx.task_id, ctx.client_id, level, message)
        if perf:
            await metric_queries.record_metrics(conn, ctx.client_id, perf, task_id=ctx.task_id)
        for step, point in curve:
            await metric_queries.record_curve(conn, ctx.task_id, step, point)

    async def _write_progress(self, conn: Any, progress: Progress) -> Fenced | None:
        ctx = self.ctx
        rank_metrics = {**progress.metrics, "step": progress.step, "samples_per_sec": progress.rank_samples_per_sec}
        if progress.contributed is not None:  # elastic: samples this rank put into applied steps, its share of a batch
            rank_metrics |= {"contributed_samples": progress.contributed, "share": progress.share}
        try:
            async with conn.begin_nested():
                await claim_queries.set_assignment(conn, ctx.task_id, ctx.client_id, self.generation, metrics=rank_metrics)
                if self.coordinator:
                    result = {"progress": progress.progress, "epoch": progress.epoch, "step": progress.step,
                              "metrics": progress.metrics, "samples_per_sec": progress.samples_per_sec,
                              **self.traffic()}
                    await claim_queries.update_task_fenced(conn, ctx.task_id, self.generation, ctx.client_id,
                                                           {"result": result})
        except Fenced as exc:
            return exc  # only the progress is refused; the log lines and metrics are still written
        return None
