"""One rank of one task on this machine: pick the checkpoint to resume, start the worker, meet the group, and turn
the worker's typed messages into the recorder's database rows until the attempt ends with an Outcome."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, assert_never

import app
from app.bundles import sandbox
from app.datasets.swarm import DatasetUnavailable, DatasetUnusable, ShardSwarm
from app.errors import Fenced
from app.netinfo import local_addresses, same_subnet
from app.scheduling.claiming import Formation
from app.scheduling.decide import choose_rendezvous_host
from app.scheduling.validation import parse_interval
from app.training.checkpoint_check import checkpoint_problem
from app.training.context import Outcome, RunContext
from app.training.messages import (
    Broken,
    Checkpoint,
    Epoch,
    Failed,
    Finished,
    Log,
    Progress,
    Regrouped,
    Released,
    Rendezvous,
    Started,
    Stopped,
    WorkerMessage,
)
from app.training.recorder import Completion, RunRecorder
from app.training.supervisor import WorkerHandle, worker_command

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0
RENDEZVOUS_WAIT_SECONDS = 120.0
HELPER_STOP_SECONDS = 5.0  # a flush or a read under way when the run ends is given this long to finish

ModelRegistered = Callable[[str, str, str, str], None]  # name, version, relative path, sha256
GroupBroken = Callable[[int, int], None]  # task id, generation: check that group's members now


class TaskRun:
    """This client's rank of one formed attempt (generation) of a task."""

    def __init__(self, ctx: RunContext, recorder: RunRecorder, on_model_registered: ModelRegistered | None = None,
                 on_group_broken: GroupBroken | None = None) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.on_model_registered = on_model_registered
        self.on_group_broken = on_group_broken
        self.task_id = ctx.task_id
        self.config = ctx.config
        self.rank = ctx.rank
        self.generation = ctx.generation
        self.n_clients = ctx.n_clients
        self.coordinator = ctx.coordinator
        self.formation = ctx.formation
        self.elastic = ctx.formation.min_clients < ctx.formation.max_clients
        self.members = set(ctx.others)
        self.worker: WorkerHandle | None = None
        self.progress = 0.0
        self.metrics: dict[str, float | None] = {}
        self.stop_reason: str | None = None
        self.abort_reason: str | None = None
        self.revoked: str | None = None
        self.started_at = time.monotonic()
        self.task_dir = ctx.task_dir
        self.published: Path | None = None
        self._rendezvous_task: asyncio.Task[None] | None = None
        self.released = False  # an elastic rank left its group for being far slower than the others

    # ----- public -----

    def describe(self) -> dict[str, Any]:
        """What this run is doing, for the dashboard and tray."""
        return {"task_id": self.task_id, "name": self.config.get("name"), "rank": self.rank,
                "generation": self.generation, "n_clients": self.n_clients, "progress": self.progress,
                "metrics": dict(self.metrics)}

    def backlog(self) -> dict[str, int]:
        """Reports waiting to be written."""
        reports = self.recorder.reports
        return {"task_logs": len(reports.logs), "metrics": len(reports.perf) + len(reports.curve)}

    async def request_stop(self, reason: str) -> None:
        """Release the task: the worker writes an emergency checkpoint and exits; the task goes back to the queue."""
        self.stop_reason = reason
        if self.worker is not None:
            await self.worker.request_stop()

    async def revoke(self, reason: str) -> None:
        """The task's bundle was revoked: checkpoint and stop at the next step; the task ends in error."""
        self.revoked = reason
        self.recorder.log("warning", reason)
        await self.request_stop(reason)

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
            helpers = [t for t in (watcher, flusher, self._rendezvous_task) if t is not None]
            # Not in the middle of a flush: a write cut short leaves an SQLite farm locked for the settle below.
            await self.recorder.db.cancel_between_blocks(helpers, HELPER_STOP_SECONDS)
            if self.worker is not None and self.worker.process and self.worker.process.returncode is None:
                await self.worker.stop(grace=5.0)
        if outcome.kind == "fenced":
            self.recorder.log("warning", f"rank {self.rank} stopped: {outcome.reason}")
        await self.recorder.flush()
        await self.recorder.settle(outcome)
        return outcome

    # ----- the attempt -----

    async def _run(self) -> Outcome:
        # A worker killed mid-write leaves its hidden temporary file; nothing ever points at one.
        for stale in self.task_dir.glob(".*.tmp") if self.task_dir.is_dir() else ():
            stale.unlink(missing_ok=True)
        try:
            self.published = await ShardSwarm(self.ctx.peer_files, self.recorder.log,
                                              self.ctx.dataset_cache_gb).prepare(self.config)
        except DatasetUnusable as exc:
            return Outcome("error", str(exc))
        except DatasetUnavailable as exc:
            return Outcome("failed", str(exc))
        asked = self._asked_to_end()  # while the shards were being fetched
        if asked is not None:
            return asked
        resume, rank_state = await self._choose_resume()
        rendezvous = None
        if self.n_clients > 1 and not self.coordinator:
            rendezvous = await self._await_rendezvous()
            if rendezvous is None and not (self.coordinator or self.n_clients == 1):  # elastic: may now lead
                return Outcome("failed", f"rank 0 published no rendezvous address within {RENDEZVOUS_WAIT_SECONDS:.0f} s")
        spec = await self._spec(resume, rank_state, rendezvous)
        asked = self._asked_to_end()  # while the run was being prepared: no worker is started
        if asked is not None:
            return asked
        worker = await self._start_worker(spec, resume, rank_state, rendezvous)
        if self.elastic and rendezvous is not None:
            sent = (str(rendezvous["host"]), int(rendezvous["port"]))
            self._rendezvous_task = asyncio.create_task(self._pass_rendezvous(self.generation, sent))
        self.recorder.log("info", f"rank {self.rank} of {self.n_clients} started (generation {self.generation}, "
                                  f"pid {worker.pid})")
        ended: Outcome | None = None
        async for message in worker.messages():
            ended = await self._handle(message) or ended
        code = await worker.wait()
        if self.abort_reason:
            return Outcome("failed", self.abort_reason)
        if self.revoked:
            return Outcome("error", self.revoked)
        if ended is not None:
            return ended
        if self.stop_reason:
            return Outcome("stopped", self.stop_reason)
        return Outcome("failed", f"rank {self.rank}'s worker exited with code {code} without reporting an end")

    def _asked_to_end(self) -> Outcome | None:
        """The outcome when this rank was aborted or asked to stop before its worker started."""
        if self.abort_reason:
            return Outcome("failed", self.abort_reason)
        if self.stop_reason:
            return Outcome("stopped", self.stop_reason)
        return None

    async def _handle(self, message: WorkerMessage) -> Outcome | None:
        match message:
            case Rendezvous(port=port):
                if self.coordinator:
                    host = self._rendezvous_host()
                    await self.recorder.publish_rendezvous(host, port)
                    self.recorder.log("info", f"rendezvous published at {host}:{port}")
            case Broken(generation=generation):
                if self.on_group_broken is not None and generation == self.generation:
                    self.on_group_broken(self.task_id, generation)
            case Released(reason=reason):
                self.stop_reason = self.stop_reason or reason
                self.released = True
                self.recorder.log("warning", f"rank {self.rank}: {reason}")
            case Regrouped():
                if self.coordinator:
                    self.recorder.log("info", f"training again at step {message.step} as {message.world} member(s) "
                                              f"(generation {message.generation}"
                                              + (f", {message.seconds:.1f} s after the group broke)"
                                                 if message.seconds else ")"))
            case Started():
                await self.recorder.set_rank("marking the rank as training", status="training")
                if self.coordinator and message.sync:
                    self.recorder.sync = message.sync
                    self.recorder.log("info", f"sync: {message.sync}")
                if self.coordinator:
                    self.recorder.log("info", f"training: {message.total_steps} steps of {message.steps_per_epoch} per "
                                              f"epoch, {message.samples} training and {message.validation_samples} "
                                              "validation samples")
            case Progress():
                self._progress(message)
            case Epoch():
                self._epoch(message)
            case Log(level=level, message=text):
                if self.coordinator or level in ("warning", "error"):
                    self.recorder.log(level, text[:2000])
            case Checkpoint():
                await self._record_checkpoint(message)
            case Finished():
                return await self._finished(message)
            case Stopped() if self.revoked:
                return Outcome("error", self.revoked)
            case Stopped():
                reason = self.stop_reason or "the group stopped (another rank's agent asked for it or went away)"
                return Outcome("stopped" if self.stop_reason else "failed", reason)
            case Failed():
                self.recorder.log("error", f"rank {self.rank} failed: {message.error}\n{message.traceback}".strip())
                return Outcome("error" if message.permanent else "failed", message.error)
            case _:
                assert_never(message)
        return None

    def _progress(self, message: Progress) -> None:
        reports = self.recorder.reports
        self.progress = message.progress
        self.metrics = dict(message.metrics)
        reports.progress = message
        if message.contributions is not None:
            self.recorder.contributions = message.contributions
        if message.bytes_per_step is not None or message.utilisation is not None:
            self.recorder.last_traffic = {"bytes_per_step": message.bytes_per_step, "utilisation": message.utilisation}
        if self.coordinator:
            point = {k: v for k, v in message.metrics.items() if v is not None}
            traffic = {k: v for k, v in (("bytes_per_step", message.bytes_per_step),
                                         ("utilisation", message.utilisation)) if v is not None}
            reports.curve.append((message.step, {**point, "samples_per_sec": message.samples_per_sec, **traffic}))
        reports.perf += [("samples_per_sec", message.rank_samples_per_sec), ("step_time_ms", message.step_time * 1000)]

    def _epoch(self, message: Epoch) -> None:
        reports = self.recorder.reports
        reported = {"val_loss": message.val_loss, "val_accuracy": message.val_accuracy,
                    "loss": message.loss, "accuracy": message.accuracy, "val_perplexity": message.val_perplexity}
        update = {k: v for k, v in reported.items() if v is not None}
        self.metrics.update(update)
        if reports.progress is not None:
            reports.progress = replace(reports.progress, metrics={**reports.progress.metrics, **update})
        if self.coordinator:
            perplexity = "" if message.val_perplexity is None else f", val_perplexity {message.val_perplexity:.4f}"
            self.recorder.log("info", f"epoch {message.epoch} ended at step {message.step}: "
                                      f"val_loss {message.val_loss:.4f}, val_accuracy {message.val_accuracy:.4f}"
                                      f"{perplexity}")

    async def _record_checkpoint(self, message: Checkpoint) -> None:
        path = Path(message.path)
        relative = path.relative_to(self.ctx.data_dir).as_posix()
        kind = message.kind
        metrics = {**message.metrics, "sha256": message.sha256, "step": message.step,
                   "epoch": message.epoch, "rank": self.rank, "size": path.stat().st_size,
                   "generation": self.generation}
        full = kind in ("regular", "emergency", "final")
        removed = await self.recorder.checkpoint(relative, kind, metrics,
                                                 set_task_path=full and (self.coordinator or kind == "emergency"))
        for old in removed:
            (self.ctx.data_dir / old).unlink(missing_ok=True)
        if self.coordinator or kind == "emergency":
            self.recorder.log("info", f"{kind} checkpoint at step {message.step}: {relative}")

    async def _finished(self, message: Finished) -> Outcome:
        metrics = message.metrics
        # A progress report not written yet would replace the rank's final metrics (its params_sha256) when flushed.
        self.recorder.reports.progress = None
        await self.recorder.set_rank("marking the rank completed", status="completed",
                                     metrics={**metrics, "params_sha256": message.params_sha256, "step": message.step})
        if not self.coordinator:
            self.recorder.completed = True
            return Outcome("completed")
        if message.model_path is None or message.model_sha256 is None:
            return Outcome("failed", f"rank {self.rank} finished without naming the model file it wrote")
        final_point = {k: v for k, v in metrics.items() if v is not None}
        if message.samples_per_sec is not None:
            final_point["samples_per_sec"] = message.samples_per_sec
        self.recorder.reports.curve.append((message.step, final_point))
        relative = Path(message.model_path).relative_to(self.ctx.data_dir).as_posix()
        url = f"aifarm://{self.ctx.client_id}/{relative}"
        completion = Completion(
            url=url, sha256=message.model_sha256,
            model_config={**self.config, "final_metrics": metrics, "task_id": self.task_id,
                          "params_sha256": message.params_sha256, "replicas": []},
            result={"progress": 100.0, "epoch": message.epoch, "step": message.step,
                    "metrics": metrics, "samples_per_sec": message.samples_per_sec, **self.recorder.traffic(message)})
        await self.recorder.flush()
        version = await self.recorder.complete(completion)
        if self.on_model_registered is not None:
            self.on_model_registered(self.config["name"], version, relative, message.model_sha256)
        return Outcome("completed")

    # ----- resume -----

    async def _choose_resume(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        for row in await self.recorder.resume_candidates():
            metrics = row["metrics"] or {}
            local = await self.ctx.peer_files.fetch(row["client_id"], row["path"], metrics.get("sha256", ""))
            if local is None:
                self.recorder.log("warning", f"checkpoint {row['path']} (step {metrics.get('step')}) refused or "
                                             "unavailable; trying the previous one")
                continue
            # A file can match its sha256 and still not load (written that way): the worker would fail on it at
            # every attempt, so it is passed over like a mismatching one.
            problem = await checkpoint_problem(local, metrics["sha256"], "full")
            if problem is not None:
                self.recorder.log("warning", f"checkpoint {row['path']} (step {metrics.get('step')}) {problem}; "
                                             "trying the previous one")
                continue
            step = int(metrics.get("step", 0))
            rank_state = await self._rank_state(step, local)
            self.recorder.log("info", f"resuming from {row['type']} checkpoint at step {step} ({row['path']})")
            return {"path": str(local), "sha256": metrics["sha256"], "step": step}, rank_state
        return None, None

    async def _rank_state(self, step: int, checkpoint: Path) -> dict[str, Any] | None:
        """This rank's own RNG and loader state saved with the checkpoint, when it is there and loads."""
        state_row = await self.recorder.rank_state(step)
        if state_row is None:
            return None
        state_sha = (state_row["metrics"] or {}).get("sha256", "")
        state_path = await self.ctx.peer_files.fetch(state_row["client_id"], state_row["path"], state_sha)
        if state_path is None or state_path == checkpoint:
            return None
        problem = await checkpoint_problem(state_path, state_sha, "rank")
        if problem is not None:
            self.recorder.log("warning", f"rank state {state_row['path']} {problem}; "
                                         "resuming with the checkpoint's own RNG state")
            return None
        return {"path": str(state_path), "sha256": state_sha}

    # ----- group -----

    async def _await_rendezvous(self) -> dict[str, Any] | None:
        deadline = time.monotonic() + RENDEZVOUS_WAIT_SECONDS
        while time.monotonic() < deadline:
            run = await self.recorder.current_run()
            if run is not None:
                if run["generation"] != self.generation and self.elastic and await self._adopt(run):
                    if self.coordinator or self.n_clients == 1:
                        return None  # this member now leads the group: it meets no one
                    continue
                if run["generation"] != self.generation:
                    raise Fenced(f"task {self.task_id}: generation {self.generation} ended before it started")
                if run["rendezvous_port"]:
                    return {"host": run["rendezvous_host"], "port": int(run["rendezvous_port"])}
            await asyncio.sleep(0.3)
        return None

    def _rendezvous_host(self) -> str:
        """The coordinator's address every member can reach, from the members' registered addresses."""
        formation = self.formation
        me = formation.member(self.ctx.client_id)
        others = [m for m in formation.members if m.client_id != self.ctx.client_id]
        same_host = all(m.addresses == me.addresses and m.hostname == self.ctx.hostname for m in others)
        own = [{"ip": a.ip, "prefix": a.prefix} for a in local_addresses()]
        other_addresses = [[{"ip": ip, "prefix": prefix} for ip, prefix in m.addresses] for m in others]
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
        ctx = self.ctx
        every = parse_interval(self.config.get("checkpoint_interval", "200 steps")) or (200, "steps")
        spec: dict[str, Any] = {
            "task_id": self.task_id, "generation": self.generation, "rank": self.rank, "world_size": self.n_clients,
            "backend": ctx.backend, "rendezvous": rendezvous,
            "config": self.config, "cache_dir": str(ctx.data_dir / "datasets"), "checkpoint_dir": str(self.task_dir),
            "model_dir": str(ctx.model_dir), "resume": resume, "resume_rank_state": rank_state,
            "threads": ctx.threads, "checkpoint_every": list(every),
            "progress_interval": min(2.0, ctx.limits.heartbeat_interval),
            "collective_timeout": max(30.0, ctx.limits.failure_timeout * 3),
            "link": {"mbit_per_s": ctx.link.mbit_per_s, "latency_s": ctx.link.latency_s} if ctx.link else None,
        }
        if (self.n_clients > 1 and self.coordinator) or self.elastic:
            spec["bind_host"] = "0.0.0.0"  # an elastic member may become rank 0 later
        if self.elastic:
            spec.update(elastic=True, max_clients=self.formation.max_clients, min_clients=self.formation.min_clients,
                        members=[m.client_id for m in self.formation.members])
        # The worker opens only files inside this machine's dataset_dirs and fetches only from the farm's hosts.
        spec["dataset_dirs"] = [str(d) for d in ctx.dataset_dirs]
        spec["dataset_hosts"] = await self.recorder.dataset_hosts()
        if self.published is not None:
            spec["published_dataset"] = str(self.published)
        spec.update(ctx.device)
        return spec

    async def _start_worker(self, spec: dict[str, Any], resume: dict[str, Any] | None,
                            rank_state: dict[str, Any] | None, rendezvous: dict[str, Any] | None) -> WorkerHandle:
        """Start the worker: the agent's interpreter or the bundle's, confined by bubblewrap when the run says so."""
        ctx = self.ctx
        command = worker_command(ctx.python)
        extra_env = self._gloo_env(rendezvous or ({"host": self._rendezvous_host()} if self.elastic else None))
        if ctx.sandboxed:
            plan = self._sandbox_plan(resume, rank_state)
            command = tuple(sandbox.command(plan, command))
            if plan.network:
                log.warning("task %s: the sandbox cannot limit this worker's network to its peers (bubblewrap has no "
                            "such filter); it shares this machine's network", self.task_id)
            if ctx.python is None:  # it starts in its task folder, not the agent's: name the agent's code
                extra_env["PYTHONPATH"] = os.pathsep.join(
                    [str(Path(app.__file__).resolve().parent.parent),
                     *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
        worker = WorkerHandle(ctx.data_dir / "logs" / f"task-{self.task_id}-g{self.generation}-r{self.rank}.log",
                              command)
        self.worker = worker
        await worker.start(spec, threads=ctx.threads, extra_env=extra_env, confined=ctx.bundle is not None,
                           own_session=ctx.sandboxed)
        return worker

    def _sandbox_plan(self, resume: dict[str, Any] | None, rank_state: dict[str, Any] | None) -> sandbox.SandboxPlan:
        """What the confined worker sees: its checkpoint and model folders (read-write), its bundle, the datasets it
        may read and the checkpoint it resumes from (read-only); the network only when it must reach peers or a
        dataset host."""
        ctx = self.ctx
        for folder in (self.task_dir, ctx.model_dir):
            folder.mkdir(parents=True, exist_ok=True)
        downloads = ctx.bundle is None and _names_a_url(self.config.get("dataset_options"))
        datasets = ctx.data_dir / "datasets"
        if downloads:
            datasets.mkdir(parents=True, exist_ok=True)
        readable = [*ctx.dataset_dirs, *(Path(r["path"]) for r in (resume, rank_state) if r)]
        if ctx.python is not None:
            readable.append(ctx.python.parent.parent)
        else:  # a built-in recipe's worker keeps the agent's PYTHONPATH (recipes the volunteer installed there)
            readable += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if not downloads:
            readable.append(datasets)
        return sandbox.SandboxPlan(
            hidden=(ctx.data_dir,), writable=(self.task_dir, ctx.model_dir, *((datasets,) if downloads else ())),
            readable=tuple(readable), network=self.n_clients > 1 or downloads,
            gpu=any("cuda" in str(v) or "rocm" in str(v) for v in ctx.device.values()))

    async def _watch_generation(self) -> None:
        """Stop the worker when the attempt ends elsewhere (a newer generation fences this one); an elastic member
        follows the new membership instead while it is part of it."""
        while True:
            await asyncio.sleep(min(0.5, self.ctx.limits.heartbeat_interval) if self.elastic
                                else self.ctx.limits.heartbeat_interval)
            run = await self.recorder.current_run()
            if self.elastic and run is not None and run["generation"] != self.generation and self.worker is not None:
                if await self._follow(run):
                    continue
                return
            if run is not None and run["generation"] != self.generation and self.worker is not None:
                self.recorder.log("warning", f"attempt {self.generation} ended elsewhere; stopping rank {self.rank}")
                self.worker.kill()
                return

    async def _follow(self, run: dict[str, Any]) -> bool:
        """The membership changed: go on as the new generation's member (True), or leave the group (False)."""
        assert self.worker is not None
        formation = await self.recorder.formation() if run["formed_at"] is not None else None
        if run["formed_at"] is not None and (formation is None or formation.generation <= self.generation):
            return True  # the database is away, or read between two writes: look again
        if formation is None or self.ctx.client_id not in formation.ranks:
            # Not a member any more; when the task went back to the queue, its newest state is written first.
            self.recorder.log("info", f"rank {self.rank} left the group at generation {run['generation']}")
            self.stop_reason = self.stop_reason or "this machine is no longer a member of the group"
            await self.worker.request_stop()
            return False
        self._become(formation)
        await self.worker.send({"cmd": "regroup", "generation": self.generation, "rank": self.rank,
                                "world": self.n_clients, "members": [m.client_id for m in formation.members]})
        if not self.coordinator and self.n_clients > 1:
            self._rendezvous_task = asyncio.create_task(self._pass_rendezvous(self.generation))
        return True

    async def _adopt(self, run: dict[str, Any]) -> bool:
        """Before the worker started: take this member's place in the newer generation; False when not a member."""
        formation = await self.recorder.formation() if run["formed_at"] is not None else None
        if formation is None or formation.generation <= self.generation or self.ctx.client_id not in formation.ranks:
            return False
        self._become(formation)
        return True

    def _become(self, formation: Formation) -> None:
        """This rank's place in a newer generation of its elastic group."""
        self.formation, self.generation = formation, formation.generation
        self.rank, self.n_clients = formation.ranks[self.ctx.client_id], formation.n_clients
        self.coordinator = self.rank == 0
        self.recorder.follow(formation.generation, self.rank, self.n_clients)

    async def _pass_rendezvous(self, generation: int, sent: tuple[str, int] | None = None) -> None:
        """Hand the worker rank 0's rendezvous for this generation each time it is published (rank 0 opens a new
        store when its group did not form in time)."""
        while self.generation == generation and self.worker is not None:
            run = await self.recorder.current_run()
            if run is not None and run["generation"] == generation and run["rendezvous_port"]:
                address = (str(run["rendezvous_host"]), int(run["rendezvous_port"]))
                if address != sent and await self.worker.send({"cmd": "rendezvous", "generation": generation,
                                                               "host": address[0], "port": address[1]}):
                    sent = address
            await asyncio.sleep(0.5 if sent else 0.2)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            fenced = await self.recorder.flush()
            if fenced is not None and not self.elastic:  # an elastic member's watcher follows the new generation
                log.info("task %s: progress not written: %s", self.task_id, fenced)
                if self.worker is not None:
                    self.worker.kill()


def _names_a_url(options: Any) -> bool:
    """True when a dataset option is a URL (the worker then downloads into the dataset cache)."""
    return isinstance(options, dict) and any(isinstance(v, str) and "://" in v for v in options.values())
