"""The scheduler loop of one agent: claim ranks of tasks this machine can run, wait for the group, run it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.bundles.service import BundleService
from app.db.engine import Database
from app.db.queries import claims as claim_queries
from app.db.queries import links as link_queries
from app.db.queries import logs as log_queries
from app.db.queries import tasks as task_queries
from app.errors import DatabaseUnavailable
from app.peerfiles import PeerFiles
from app.scheduling import claiming
from app.scheduling.claiming import Formation
from app.scheduling.decide import Recipes, choose_backend, slowest_link
from app.services.donation import Donation
from app.training.context import Limits, Outcome, RunContext
from app.training.recorder import RunRecorder
from app.training.run import GroupBroken, ModelRegistered, TaskRun

log = logging.getLogger(__name__)

DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)
CLAIM_INTERVAL = 1.0
JOIN_TIMEOUT = 120.0
RELEASED_HOLD_SECONDS = 600.0  # a machine released as too slow leaves that task alone this long
SKIP_CHECK_SECONDS = 10.0


@dataclass
class Joined:
    """A rank taken in a group that has not formed yet."""

    task_id: int
    since: float


TaskEnded = Callable[[TaskRun, Outcome], None]


class Scheduler:
    """Claims work when the volunteer allows it and runs at most one task at a time."""

    def __init__(self, db: Database, client_id: str, hostname: str, donation: Donation, recipes: Recipes,
                 peer_files: PeerFiles, *, on_model_registered: ModelRegistered | None = None,
                 on_task_ended: TaskEnded | None = None, bundles: BundleService | None = None) -> None:
        self.db = db
        self.client_id = client_id
        self.hostname = hostname
        self.donation = donation
        self.recipes = recipes
        self.peer_files = peer_files
        self.on_model_registered = on_model_registered
        self.on_task_ended = on_task_ended
        self.bundles = bundles
        self._revocation_checked = 0.0
        self.joined: Joined | None = None
        self.current: TaskRun | None = None
        self._current_task: asyncio.Task[Any] | None = None
        self.skipped: set[int] = set()
        self.on_group_broken: GroupBroken | None = None  # set by the agent: its failure sweep checks that group now
        self.released_from: dict[int, float] = {}  # task → until when: this machine was too slow for its group
        self._skips_checked = 0.0
        self.join_timeout = JOIN_TIMEOUT
        self.closed = False
        self._release_reason: str | None = None  # set when work is given back before its run exists
        self.last_outcome: dict[str, Any] | None = None

    @property
    def busy(self) -> bool:
        """True while a rank is held (joined or running)."""
        return self.joined is not None or self._current_task is not None

    def describe(self) -> dict[str, Any]:
        """The scheduler's state for the dashboard and tray."""
        return {
            "running": self.current.describe() if self.current else None,
            "joined": {"task_id": self.joined.task_id, "waiting_s": round(time.monotonic() - self.joined.since, 1)}
            if self.joined else None,
            "last_outcome": self.last_outcome,
        }

    async def void_previous_session(self) -> None:
        """Ranks this client held before a restart are void: release joins, leave running groups (an elastic group
        goes on without this client, any other attempt ends)."""
        async with self.db.begin() as conn:
            for held in await claim_queries.assignments_of_client(conn, self.client_id):
                if held["task_status"] == "running" and held["generation"] is not None:
                    await claiming.leave(conn, held["task_id"], held["generation"], [self.client_id],
                                         f"client {self.client_id} restarted", failure=True,
                                         max_attempts=self.donation.settings.max_attempts)
                else:
                    await claim_queries.release_join(conn, held["task_id"], self.client_id)

    async def claim_loop(self) -> None:
        """Every second or so: form/run what is held, or claim the next task this machine may run."""
        while True:
            await asyncio.sleep(CLAIM_INTERVAL * random.uniform(0.7, 1.3))
            try:
                await self.step()
            except DB_ERRORS as exc:
                log.debug("scheduler step skipped: %s", exc)

    async def step(self) -> None:
        """One scheduling decision."""
        if self.closed:
            return
        if self._current_task is not None:
            await self._check_revoked()
            return
        if self.joined is not None:
            await self._check_joined()
            return
        if not self.donation.may_claim():
            return
        await self._claim()

    async def _claim(self) -> None:
        recipes = self.recipes
        if self.bundles is not None:
            await self.bundles.refresh()
            recipes = replace(recipes, bundles=self.bundles.ready())
        try:
            async with self.db.begin() as conn:
                now = time.monotonic()
                held_off = [task_id for task_id, until in self.released_from.items() if until > now]
                claim = await claiming.claim_next(conn, self.client_id, self.donation.capacity(), recipes=recipes,
                                                  skip_task_ids=held_off)
        except IntegrityError:
            return  # another client took the same rank first; the unique key said no
        if claim is None:
            await self._note_skipped()
        elif claim.formation is not None:
            self._start(claim.formation)
        else:
            self.joined = Joined(claim.task_id, time.monotonic())
            log.info("joined task %s as rank %s of %s; waiting for the group", claim.task_id, claim.rank, claim.n_clients)

    async def _note_skipped(self) -> None:
        """Say once, in each pending task's log, when it names a recipe this machine does not have."""
        if time.monotonic() - self._skips_checked < SKIP_CHECK_SECONDS:
            return
        self._skips_checked = time.monotonic()
        async with self.db.begin() as conn:
            for task_id, model, dataset in await claim_queries.pending_for_other_recipes(
                    conn, self.recipes, exclude=sorted(self.skipped)):
                self.skipped.add(task_id)
                await log_queries.add_task_log(conn, task_id, self.client_id, "info",
                                               f"skipped: recipe {model}/{dataset} is not installed on {self.client_id}")

    async def _check_revoked(self) -> None:
        """Stop the current run at its next step when the bundle it runs was revoked; forget the bundle."""
        run = self.current
        if run is None or run.ctx.bundle is None or self.bundles is None or run.revoked:
            return
        if time.monotonic() - self._revocation_checked < SKIP_CHECK_SECONDS / 2:
            return
        self._revocation_checked = time.monotonic()
        if await self.bundles.is_revoked(run.ctx.bundle):
            await run.revoke(f"bundle {run.ctx.bundle} was revoked by its publisher; task stopped")

    async def _check_joined(self) -> None:
        assert self.joined is not None
        task_id = self.joined.task_id
        settled = None
        if self.donation.may_claim():  # a holder about to give its rank back does not form a group with it
            async with self.db.begin() as conn:
                settled = await claiming.form_if_settled(conn, task_id, self.donation.settings.elastic_settle)
        if settled is not None and self.client_id in settled.ranks:
            self.joined = None
            self._start(settled)
            return
        async with self.db.connect() as conn:
            held = [a for a in await claim_queries.assignments_of_client(conn, self.client_id) if a["task_id"] == task_id]
            formation = await claiming.formation_of(conn, task_id) if held and held[0]["task_status"] == "running" else None
        if not held:
            log.info("rank of task %s was released", task_id)
            self.joined = None
            return
        if formation is not None:
            self.joined = None
            self._start(formation)
            return
        if time.monotonic() - self.joined.since > self.join_timeout or not self.donation.may_claim():
            async with self.db.begin() as conn:
                released = await claim_queries.release_join(conn, task_id, self.client_id)
            if released:
                log.info("gave back the rank of task %s (group not formed in %.0f s)", task_id, self.join_timeout)
            self.joined = None

    def _start(self, formation: Formation) -> None:
        self._current_task = asyncio.create_task(self._run(formation), name=f"task-{formation.task_id}")

    async def context_for(self, formation: Formation) -> RunContext:
        """What this rank of the formed group is told: the task, the group, the device, the limits."""
        async with self.db.connect() as conn:
            task = await task_queries.get_task(conn, formation.task_id)
            links = await link_queries.among(conn, [m.client_id for m in formation.members])
        assert task is not None
        settings, donation = self.donation.settings, self.donation
        every_gpu = formation.every_member_has_a_gpu and bool(donation.allowed_gpus())
        config = task["config"] or {}
        bundle = config.get("bundle") if isinstance(config.get("bundle"), str) else None
        env = self.bundles.env(bundle) if bundle and self.bundles is not None else None
        can_confine = self.bundles is not None and self.bundles.sandbox_problem is None
        return RunContext(
            task_id=formation.task_id, config=task["config"] or {}, formation=formation,
            rank=formation.ranks[self.client_id], client_id=self.client_id, hostname=self.hostname,
            farm_name=settings.farm_name, data_dir=settings.data_dir, device=donation.device_spec(),
            backend=choose_backend(every_gpu) if formation.n_clients > 1 else "gloo",
            threads=donation.training_threads(), dataset_dirs=tuple(settings.dataset_dirs),
            limits=Limits(settings.heartbeat_interval, settings.failure_timeout, settings.max_attempts),
            peer_files=self.peer_files, bundle=bundle, python=env.python if env else None,
            sandboxed=can_confine and (bundle is not None or settings.sandbox_builtin),
            link=slowest_link([(row.mbit_per_s, row.latency_ms) for row in links]),
            dataset_cache_gb=settings.dataset_cache_gb)

    async def _run(self, formation: Formation) -> None:
        try:
            ctx = await self.context_for(formation)
            if ctx.bundle and ctx.python is None:  # revoked or removed since the claim: back to the queue
                await RunRecorder(self.db, ctx).settle(Outcome("stopped", f"bundle {ctx.bundle} is no longer "
                                                                          f"installed on {self.client_id}"))
                return
            run = TaskRun(ctx, RunRecorder(self.db, ctx), self.on_model_registered, self.on_group_broken)
            self.current = run
            if self._release_reason is not None:  # given back while the run was being prepared
                await run.request_stop(self._release_reason)
            outcome = await run.run()
            if run.released:  # not joined again at once: the group would release it again
                self.released_from[run.task_id] = time.monotonic() + RELEASED_HOLD_SECONDS
            if run.revoked and self.bundles is not None and ctx.bundle:
                self.bundles.forget(ctx.bundle)
            self.last_outcome = {"task_id": run.task_id, "outcome": outcome.kind, "reason": outcome.reason}
            if self.on_task_ended is not None:
                self.on_task_ended(run, outcome)
        except Exception:
            log.exception("task %s: the run failed unexpectedly", formation.task_id)
        finally:
            self.current = None
            self._current_task = None
            self._release_reason = None

    async def close(self, reason: str) -> None:
        """Claim nothing more and give back what is held (the agent is stopping)."""
        self.closed = True
        await self.release_current(reason)

    async def release_current(self, reason: str) -> None:
        """Give the current work back: emergency checkpoint, attempt ended, task re-queued; waits for it."""
        if self.joined is not None:
            try:
                async with self.db.begin() as conn:
                    await claim_queries.release_join(conn, self.joined.task_id, self.client_id)
            except DB_ERRORS:
                pass
            self.joined = None
        run, task = self.current, self._current_task
        if task is not None:
            self._release_reason = reason
            if run is not None:
                await run.request_stop(reason)
            try:
                await asyncio.wait_for(asyncio.shield(task), 60)
            except asyncio.TimeoutError:
                task.cancel()
