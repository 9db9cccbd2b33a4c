"""One rank of one task on this machine: pick the checkpoint to resume, start the worker, meet the group,
turn the worker's messages into database rows (batched, fenced by generation), and end the attempt."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from sqlalchemy.exc import SQLAlchemyError

from app.db.queries import checkpoints as checkpoint_queries
from app.db.queries import claims as claim_queries
from app.db.queries import dataset_hosts as dataset_host_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.db.queries import models as model_queries
from app.errors import DatabaseUnavailable, Fenced
from app.netinfo import local_addresses, same_subnet
from app.scheduling.decide import choose_rendezvous_host
from app.scheduling.validation import parse_interval
from app.training.checkpoint_check import checkpoint_problem
from app.training.messages import (
    Checkpoint,
    Epoch,
    Failed,
    Finished,
    Log,
    Progress,
    Rendezvous,
    Started,
    Stopped,
    WorkerMessage,
)
from app.training.supervisor import WorkerHandle

if TYPE_CHECKING:
    from app.agent import Agent

log = logging.getLogger(__name__)

DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)
FLUSH_SECONDS = 2.0
RENDEZVOUS_WAIT_SECONDS = 120.0


@dataclass
class Outcome:
    """How this rank's part of an attempt ended."""

    kind: str  # "completed", "stopped", "failed", "error", "fenced"
    reason: str = ""


@dataclass
class _Buffer:
    progress: Progress | None = None
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    perf: list[tuple[str, float]] = field(default_factory=list)


class TaskRun:
    """This client's rank of one formed attempt (generation) of a task."""

    def __init__(self, agent: "Agent", task: dict[str, Any], rank: int, generation: int, n_clients: int) -> None:
        self.agent = agent
        self.db = agent.db
        self.task = task
        self.task_id = int(task["id"])
        self.config: dict[str, Any] = task["config"]
        self.rank = rank
        self.generation = generation
        self.n_clients = n_clients
        self.coordinator = rank == 0
        self.worker: WorkerHandle | None = None
        self.progress = 0.0
        self.metrics: dict[str, float | None] = {}
        self.buffer = _Buffer()
        self.stop_reason: str | None = None
        self.abort_reason: str | None = None
        self.completed = False
        self.members: set[str] = set()
        self.started_at = time.monotonic()
        self.task_dir = agent.settings.data_dir / "checkpoints" / f"task-{self.task_id}"

    # ----- public -----

    async def _with_db(self, what: str, operation: Any) -> Any:
        """Run a database write, waiting out an outage (the worker keeps training meanwhile); Fenced passes through."""
        delay = 0.5
        while True:
            try:
                return await operation()
            except Fenced:
                raise
            except DB_ERRORS as exc:
                log.warning("task %s: %s waits for the database: %s", self.task_id, what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def describe(self) -> dict[str, Any]:
        """What this run is doing, for the dashboard and tray."""
        return {"task_id": self.task_id, "name": self.config.get("name"), "rank": self.rank,
                "generation": self.generation, "n_clients": self.n_clients, "progress": self.progress,
                "metrics": dict(self.metrics)}

    async def request_stop(self, reason: str) -> None:
        """Release the task: the worker writes an emergency checkpoint and exits; the task goes back to the queue."""
        self.stop_reason = reason
        if self.worker is not None:
            await self.worker.request_stop()

    def abort(self, reason: str) -> None:
        """End this attempt as failed at once (a member vanished): the worker is killed, no checkpoint."""
        self.abort_reason = reason
        if self.worker is not None:
            self.worker.kill()

    async def run(self) -> Outcome:
        """Run this rank to its end and settle the attempt in the database."""
        flusher = asyncio.create_task(self._flush_loop(), name=f"flush-{self.task_id}")
        watcher = asyncio.create_task(self._watch_generation(), name=f"watch-{self.task_id}")
        try:
            outcome = await self._run()
        except Fenced as exc:
            outcome = Outcome("fenced", str(exc))
        except asyncio.CancelledError:
            if self.worker is not None:
                await self.worker.stop(grace=10.0)
            raise
        finally:
            watcher.cancel()
            flusher.cancel()
            for task in (watcher, flusher):
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            if self.worker is not None and self.worker.process and self.worker.process.returncode is None:
                await self.worker.stop(grace=5.0)
        await self._flush(final=True)
        await self._settle(outcome)
        return outcome

    # ----- the attempt -----

    async def _run(self) -> Outcome:
        async with self.db.connect() as conn:
            group = (await claim_queries.members_of_running(conn, self.task_id)).get(self.task_id, {})
        self.members = {m["client_id"] for m in group.get("members", [])} - {self.agent.client_id}
        # A worker killed mid-write leaves its hidden temporary file; nothing ever points at one.
        for stale in self.task_dir.glob(".*.tmp") if self.task_dir.is_dir() else ():
            stale.unlink(missing_ok=True)
        resume, rank_state = await self._choose_resume()
        rendezvous = None
        if self.n_clients > 1 and not self.coordinator:
            rendezvous = await self._await_rendezvous()
            if rendezvous is None:
                return Outcome("failed", f"rank 0 published no rendezvous address within {RENDEZVOUS_WAIT_SECONDS:.0f} s")
        spec = await self._spec(resume, rank_state, rendezvous)
        self.worker = WorkerHandle(self.agent.settings.data_dir / "logs" / f"task-{self.task_id}-g{self.generation}-r{self.rank}.log")
        env = self._gloo_env(rendezvous)
        await self.worker.start(spec, threads=self.agent.training_threads(), extra_env=env)
        self._log("info", f"rank {self.rank} of {self.n_clients} started (generation {self.generation}, pid {self.worker.pid})")
        ended: Outcome | None = None
        async for message in self.worker.messages():
            ended = await self._handle(message) or ended
        code = await self.worker.wait()
        if self.abort_reason:
            return Outcome("failed", self.abort_reason)
        if ended is not None:
            return ended
        if self.stop_reason:
            return Outcome("stopped", self.stop_reason)
        return Outcome("failed", f"rank {self.rank}'s worker exited with code {code} without reporting an end")

    async def _handle(self, message: WorkerMessage) -> Outcome | None:
        match message:
            case Rendezvous(port=port):
                if self.coordinator:
                    await self._publish_rendezvous(port)
            case Started():
                async def started() -> None:
                    async with self.db.begin() as conn:
                        await claim_queries.set_assignment(conn, self.task_id, self.agent.client_id, self.generation,
                                                           status="training")

                await self._with_db("marking the rank as training", started)
                if self.coordinator:
                    self._log("info", f"training: {message.total_steps} steps of {message.steps_per_epoch} per epoch, "
                                      f"{message.samples} training and {message.validation_samples} validation samples")
            case Progress():
                self.progress = message.progress
                self.metrics = dict(message.metrics)
                self.buffer.progress = message
                if self.coordinator:
                    point = {k: v for k, v in message.metrics.items() if v is not None}
                    self.buffer.curve.append((message.step, {**point, "samples_per_sec": message.samples_per_sec}))
                self.buffer.perf += [("samples_per_sec", message.rank_samples_per_sec),
                                     ("step_time_ms", message.step_time * 1000)]
            case Epoch():
                reported = {"val_loss": message.val_loss, "val_accuracy": message.val_accuracy,
                            "loss": message.loss, "accuracy": message.accuracy}
                update = {k: v for k, v in reported.items() if v is not None}
                self.metrics.update(update)
                if self.buffer.progress is not None:
                    buffered = self.buffer.progress
                    self.buffer.progress = replace(buffered, metrics={**buffered.metrics, **update})
                if self.coordinator:
                    self._log("info", f"epoch {message.epoch} ended at step {message.step}: "
                                      f"val_loss {message.val_loss:.4f}, val_accuracy {message.val_accuracy:.4f}")
            case Log(level=level, message=text):
                if self.coordinator or level in ("warning", "error"):
                    self._log(level, text[:2000])
            case Checkpoint():
                await self._record_checkpoint(message)
            case Finished():
                return await self._finished(message)
            case Stopped():
                reason = self.stop_reason or "the group stopped (another rank's agent asked for it or went away)"
                return Outcome("stopped" if self.stop_reason else "failed", reason)
            case Failed():
                self._log("error", f"rank {self.rank} failed: {message.error}\n{message.traceback}".strip())
                return Outcome("error" if message.permanent else "failed", message.error)
            case _:
                assert_never(message)
        return None

    async def _publish_rendezvous(self, port: int) -> None:
        host = await self._rendezvous_host()

        async def publish() -> None:
            async with self.db.begin() as conn:
                await claim_queries.publish_rendezvous(conn, self.task_id, self.generation, self.agent.client_id, host, port)

        await self._with_db("publishing the rendezvous", publish)
        self._log("info", f"rendezvous published at {host}:{port}")

    async def _record_checkpoint(self, message: Checkpoint) -> None:
        path = Path(message.path)
        relative = path.relative_to(self.agent.settings.data_dir).as_posix()
        kind = message.kind
        metrics = {**message.metrics, "sha256": message.sha256, "step": message.step,
                   "epoch": message.epoch, "rank": self.rank, "size": path.stat().st_size,
                   "generation": self.generation}
        full = kind in ("regular", "emergency", "final")

        async def record() -> list[str]:
            async with self.db.begin() as conn:
                await checkpoint_queries.record(conn, task_id=self.task_id, generation=self.generation,
                                                client_id=self.agent.client_id, path=relative, kind=kind, metrics=metrics,
                                                set_task_path=full and (self.coordinator or kind == "emergency"))
                return await checkpoint_queries.prune_regular(conn, self.task_id, self.agent.client_id,
                                                              int(self.config.get("keep_checkpoints", 3)))

        removed = await self._with_db(f"recording the {kind} checkpoint", record)
        for old in removed:
            (self.agent.settings.data_dir / old).unlink(missing_ok=True)
        if self.coordinator or kind == "emergency":
            self._log("info", f"{kind} checkpoint at step {message.step}: {relative}")

    async def _finished(self, message: Finished) -> Outcome:
        metrics = message.metrics
        assignment_metrics = {**metrics, "params_sha256": message.params_sha256, "step": message.step}
        async def rank_done() -> None:
            async with self.db.begin() as conn:
                await claim_queries.set_assignment(conn, self.task_id, self.agent.client_id, self.generation,
                                                   status="completed", metrics=assignment_metrics)

        await self._with_db("marking the rank completed", rank_done)
        if not self.coordinator:
            self.completed = True
            return Outcome("completed")
        if message.model_path is None or message.model_sha256 is None:
            return Outcome("failed", f"rank {self.rank} finished without naming the model file it wrote")
        model_sha256 = message.model_sha256
        final_point = {k: v for k, v in metrics.items() if v is not None}
        if message.samples_per_sec is not None:
            final_point["samples_per_sec"] = message.samples_per_sec
        self.buffer.curve.append((message.step, final_point))
        weights = Path(message.model_path)
        relative = weights.relative_to(self.agent.settings.data_dir).as_posix()
        url = f"aifarm://{self.agent.client_id}/{relative}"
        result = {"progress": 100.0, "epoch": message.epoch, "step": message.step,
                  "metrics": metrics, "samples_per_sec": message.samples_per_sec}
        await self._flush(final=True)

        async def complete() -> str:
            async with self.db.begin() as conn:
                await claim_queries.check_fence(conn, self.task_id, self.generation, self.agent.client_id)
                version = await model_queries.register(
                    conn, name=self.config["name"], url=url, sha256=model_sha256,
                    config={**self.config, "final_metrics": metrics, "task_id": self.task_id,
                            "params_sha256": message.params_sha256, "replicas": []},
                )
                await claim_queries.update_task_fenced(conn, self.task_id, self.generation, self.agent.client_id,
                                                       {"status": "completed", "result": result})
                await log_queries.add_task_log(conn, self.task_id, self.agent.client_id, "info",
                                               f"completed: model {self.config['name']} version {version} ({url})")
                return version

        version = await self._with_db("registering the model and completing the task", complete)
        self.completed = True
        self.agent.after_model_registered(self.config["name"], version, relative, model_sha256)
        return Outcome("completed")

    async def _settle(self, outcome: Outcome) -> None:
        """End the attempt for everyone when this rank failed or was stopped (the generation fence makes it once)."""
        if outcome.kind in ("completed", "fenced"):
            if outcome.kind == "fenced":
                self._log("warning", f"rank {self.rank} stopped: {outcome.reason}")
                await self._flush(final=True)
            return
        max_attempts = int(self.config.get("max_attempts") or self.agent.settings.max_attempts)
        for _ in range(30):
            try:
                async with self.db.begin() as conn:
                    if outcome.kind == "error":
                        await claim_queries.mark_error(conn, self.task_id, self.generation, outcome.reason)
                    else:
                        status = await claim_queries.end_attempt(
                            conn, self.task_id, self.generation, outcome.reason,
                            failure=outcome.kind == "failed", max_attempts=max_attempts)
                        if status:
                            await log_queries.add_task_log(conn, self.task_id, self.agent.client_id,
                                                           "warning", f"attempt {self.generation} ended: {outcome.reason}; task {status}")
                return
            except DB_ERRORS as exc:
                log.warning("cannot settle task %s yet: %s", self.task_id, exc)
                await asyncio.sleep(2.0)

    # ----- resume -----

    async def _choose_resume(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        async with self.db.connect() as conn:
            candidates = await checkpoint_queries.resume_candidates(conn, self.task_id, self.agent.client_id)
        for row in candidates:
            metrics = row["metrics"] or {}
            local = await self.agent.fetch_checkpoint(row["client_id"], row["path"], metrics.get("sha256", ""))
            if local is None:
                self._log("warning", f"checkpoint {row['path']} (step {metrics.get('step')}) refused or unavailable; "
                                     "trying the previous one")
                continue
            # A file can match its sha256 and still not load (written that way): the worker would fail on it at
            # every attempt, so it is passed over like a mismatching one.
            problem = await checkpoint_problem(local, metrics["sha256"], "full")
            if problem is not None:
                self._log("warning", f"checkpoint {row['path']} (step {metrics.get('step')}) {problem}; "
                                     "trying the previous one")
                continue
            step = int(metrics.get("step", 0))
            rank_state = None
            async with self.db.connect() as conn:
                state_row = await checkpoint_queries.rank_state(conn, self.task_id, self.rank, step)
            if state_row is not None:
                state_sha = (state_row["metrics"] or {}).get("sha256", "")
                state_path = await self.agent.fetch_checkpoint(state_row["client_id"], state_row["path"], state_sha)
                if state_path is not None and state_path != local:
                    state_problem = await checkpoint_problem(state_path, state_sha, "rank")
                    if state_problem is not None:
                        self._log("warning", f"rank state {state_row['path']} {state_problem}; "
                                             "resuming with the checkpoint's own RNG state")
                        state_path = None
                if state_path is not None:
                    rank_state = {"path": str(state_path), "sha256": state_sha}
            self._log("info", f"resuming from {row['type']} checkpoint at step {step} ({row['path']})")
            return {"path": str(local), "sha256": metrics["sha256"], "step": step}, rank_state
        return None, None

    # ----- group -----

    async def _await_rendezvous(self) -> dict[str, Any] | None:
        deadline = time.monotonic() + RENDEZVOUS_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                async with self.db.connect() as conn:
                    run = await claim_queries.get_run(conn, self.task_id)
            except DB_ERRORS:
                run = None
            if run is not None:
                if run["generation"] != self.generation:
                    raise Fenced(f"task {self.task_id}: generation {self.generation} ended before it started")
                if run["rendezvous_port"]:
                    return {"host": run["rendezvous_host"], "port": int(run["rendezvous_port"])}
            await asyncio.sleep(0.3)
        return None

    async def _rendezvous_host(self) -> str:
        async with self.db.connect() as conn:
            members = await claim_queries.members_of_running(conn, self.task_id)
            from app.db.queries import clients as client_queries

            ids = [m["client_id"] for m in members.get(self.task_id, {}).get("members", [])]
            rows = await client_queries.get_clients(conn, ids)
        others = [r for r in rows if r["id"] != self.agent.client_id]
        same_host = all((r.get("session_info") or {}).get("addresses") == self.agent.session_info()["addresses"]
                        and r.get("hostname") == self.agent.hostname for r in others)
        own = [{"ip": a.ip, "prefix": a.prefix} for a in local_addresses()]
        other_addresses = [(r.get("session_info") or {}).get("addresses", []) for r in others]
        return choose_rendezvous_host(own, other_addresses, same_host)

    def _gloo_env(self, rendezvous: dict[str, Any] | None) -> dict[str, str]:
        """Point gloo at the interface that reaches the group (the rendezvous host's subnet)."""
        host = rendezvous["host"] if rendezvous else None
        if self.n_clients == 1:
            return {}
        if host is None or host.startswith("127."):
            return {"GLOO_SOCKET_IFNAME": "lo"} if host else {}
        local = same_subnet(host, local_addresses())
        return {"GLOO_SOCKET_IFNAME": local.interface} if local else {}

    async def _spec(self, resume: dict[str, Any] | None, rank_state: dict[str, Any] | None,
                    rendezvous: dict[str, Any] | None) -> dict[str, Any]:
        data_dir = self.agent.settings.data_dir
        every = parse_interval(self.config.get("checkpoint_interval", "200 steps")) or (200, "steps")
        spec: dict[str, Any] = {
            "task_id": self.task_id, "generation": self.generation, "rank": self.rank, "world_size": self.n_clients,
            "backend": await self.agent.backend_for(self.task_id, self.n_clients), "rendezvous": rendezvous,
            "config": self.config, "cache_dir": str(data_dir / "datasets"), "checkpoint_dir": str(self.task_dir),
            "model_dir": str(data_dir / "models"), "resume": resume, "resume_rank_state": rank_state,
            "threads": self.agent.training_threads(), "checkpoint_every": list(every),
            "progress_interval": min(2.0, self.agent.settings.heartbeat_interval),
            "collective_timeout": max(30.0, self.agent.settings.failure_timeout * 3),
        }
        if self.n_clients > 1 and self.coordinator:
            spec["bind_host"] = "0.0.0.0"
        # The worker opens only files inside this machine's dataset_dirs and fetches only from the farm's hosts.
        spec["dataset_dirs"] = [str(d) for d in self.agent.settings.dataset_dirs]
        spec["dataset_hosts"] = await self._with_db("reading the farm's dataset hosts", self._dataset_hosts)
        spec.update(self.agent.device_spec())
        return spec

    async def _dataset_hosts(self) -> list[str]:
        async with self.db.connect() as conn:
            return await dataset_host_queries.list_hosts(conn, self.agent.settings.farm_name)

    async def _watch_generation(self) -> None:
        """Stop the worker when the attempt ends elsewhere (a newer generation fences this one)."""
        while True:
            await asyncio.sleep(self.agent.settings.heartbeat_interval)
            try:
                async with self.db.connect() as conn:
                    run = await claim_queries.get_run(conn, self.task_id)
            except DB_ERRORS:
                continue
            if run is not None and run["generation"] != self.generation and self.worker is not None:
                self._log("warning", f"attempt {self.generation} ended elsewhere; stopping rank {self.rank}")
                self.worker.kill()
                return

    # ----- batching -----

    def _log(self, level: str, message: str) -> None:
        getattr(log, "warning" if level == "warning" else ("error" if level == "error" else "info"))(
            "task %s: %s", self.task_id, message.splitlines()[0] if message else "")
        self.buffer.logs.append((level, message))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self._flush()

    async def _flush(self, final: bool = False) -> None:
        """Write what the worker reported since the last flush; keep it for the next try if the database is away."""
        progress, logs, perf = self.buffer.progress, list(self.buffer.logs), list(self.buffer.perf)
        curve = list(self.buffer.curve)
        if progress is None and not logs and not perf and not curve:
            return
        fenced: Fenced | None = None
        try:
            async with self.db.begin() as conn:
                for level, message in logs:
                    await log_queries.add_task_log(conn, self.task_id, self.agent.client_id, level, message)
                if perf:
                    await metric_queries.record_metrics(conn, self.agent.client_id, perf, task_id=self.task_id)
                for step, point in curve:
                    await metric_queries.record_curve(conn, self.task_id, step, point)
                if progress is not None and not self.completed:
                    rank_metrics = {**progress.metrics, "step": progress.step,
                                    "samples_per_sec": progress.rank_samples_per_sec}
                    try:
                        async with conn.begin_nested():
                            await claim_queries.set_assignment(conn, self.task_id, self.agent.client_id,
                                                               self.generation, metrics=rank_metrics)
                            if self.coordinator:
                                result = {"progress": progress.progress, "epoch": progress.epoch,
                                          "step": progress.step, "metrics": progress.metrics,
                                          "samples_per_sec": progress.samples_per_sec}
                                await claim_queries.update_task_fenced(conn, self.task_id, self.generation,
                                                                       self.agent.client_id, {"result": result})
                    except Fenced as exc:
                        fenced = exc  # only the progress is refused; the log lines and metrics are still written
        except DB_ERRORS as exc:
            log.debug("task %s: flush postponed: %s", self.task_id, exc)
            return
        if fenced is not None and not final:
            log.info("task %s: progress not written: %s", self.task_id, fenced)
            if self.worker is not None:
                self.worker.kill()
        del self.buffer.logs[: len(logs)]
        del self.buffer.perf[: len(perf)]
        del self.buffer.curve[: len(curve)]
        if self.buffer.progress is progress:
            self.buffer.progress = None


