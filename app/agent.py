"""The composition root: builds the agent's services from the settings, wires them, runs them, stops them in reverse.

Nothing below the command line receives the Agent: each part gets the narrow services it uses (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from app import __version__
from app.bundles.service import BundleService
from app.config import Settings
from app.db.engine import Database, create_database
from app.db.migrate import current_revision, head_revision, open_current_database, upgrade
from app.db.queries import clients as client_queries
from app.db.queries import farms as farm_queries
from app.discovery.registry import PeerRegistry
from app.discovery.service import DiscoveryService
from app.errors import AifarmError, DatabaseUnavailable
from app.fdlimit import raise_open_files_limit
from app.identity import load_or_create_client_id
from app.netguard import ConnectionGuard, ConnectionLimits, GuardedSite, ThrottledLog, throttle_accept_errors
from app.netinfo import local_addresses
from app.operations.maintenance import Maintenance
from app.peerapi.client import PeerClient
from app.peerfiles import PeerFiles
from app.runtime_files import load_or_create_api_token, remove_agent_file, write_agent_file
from app.scheduling.decide import Recipes
from app.scheduling.failures import FailureSweep
from app.scheduling.scheduler import Scheduler
from app.services.donation import Donation
from app.services.events import EventLog
from app.services.heartbeat import Heartbeat
from app.services.links import LinkMeter
from app.services.machine import MachineMetrics
from app.services.replicator import Replicator
from app.stopsignals import install_stop_signals
from app.supervise import LoopStatus, supervise
from app.training.capability import training_unavailable
from app.training.catalog import Catalog
from app.training.context import Outcome
from app.training.run import TaskRun
from app.web.security import LoginLinks

log = logging.getLogger(__name__)

STOP_STEP_SECONDS = 5.0
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)


class Agent:
    """One machine's agent: builds the services, serves the dashboard and the peer API, owns the background loops."""

    def __init__(self, settings: Settings, db: Database, *, headless: bool = True,
                 reload: Callable[[], Settings] | None = None,
                 connection_limits: ConnectionLimits | None = None) -> None:
        self.db = db
        self.headless = headless
        self.client_id = load_or_create_client_id(settings.data_dir)
        self.api_token = load_or_create_api_token(settings.data_dir)
        self.hostname = socket.gethostname()
        self.started_at = datetime.now(timezone.utc)
        self.farm_secret: str | None = None
        self.dashboard_port: int | None = None
        self.peer_port: int | None = None
        self.events = EventLog(self.client_id)
        self.training_unavailable = training_unavailable()
        self.donation = Donation(settings, self.events, reload=reload, training_unavailable=self.training_unavailable)
        self.registry = PeerRegistry(self.client_id, settings.farm_name)
        self.peer_client = PeerClient(self.client_id, lambda: self.farm_secret)
        self.discovery = DiscoveryService(
            db=db, registry=self.registry, client=self.peer_client, client_id=self.client_id,
            farm_name=settings.farm_name, version=__version__, manual_peers=settings.peers,
            peer_port=lambda: self.peer_port or 0, verify_interval=min(settings.heartbeat_interval, 2.0),
            use_mdns=settings.mdns,
        )
        self.heartbeat = Heartbeat(db, self.client_id, self.hostname, self.donation, self.events,
                                   session_info=self.session_info, reach=lambda: self.discovery.reach)
        self.peer_files = PeerFiles(settings.data_dir, self.client_id, self.hostname, db, self.registry,
                                    self.peer_client, self.events)
        self.links = LinkMeter(db, self.client_id, self.registry, self.peer_client,
                               interval=lambda: self.donation.settings.link_probe_interval,
                               busy=lambda: self.scheduler.current is not None)
        self.catalog = Catalog.load()
        self.bundles = BundleService(
            db, settings.data_dir, self.client_id,
            lambda owners, m, dest: self.peer_files.fetch_bundle(owners, m.name, m.version, m.sha256, dest),
            allow_unsandboxed=lambda: self.donation.settings.allow_unsandboxed_bundles)
        self.scheduler = Scheduler(db, self.client_id, self.hostname, self.donation,
                                   Recipes(frozenset(self.catalog.models), frozenset(self.catalog.datasets)),
                                   self.peer_files, on_task_ended=self._task_ended, bundles=self.bundles)
        self.failures = FailureSweep(db, lambda: self.donation.settings, self.client_id,
                                     healthy_since=lambda: self.heartbeat.database_ok_since if self.heartbeat.database_ok else None,
                                     join_timeout=self.scheduler.join_timeout)
        self.scheduler.on_group_broken = lambda task_id, generation: self._spawn(
            self.failures.watch(task_id, generation), f"members-{task_id}-{generation}")
        self.replicator = Replicator(db, self.client_id, self.peer_files, self.events,
                                     may_work=lambda: self.heartbeat.database_ok and not self.donation.paused)
        self.machine = MachineMetrics(db, self.client_id, self.donation, lambda: self.scheduler.current)
        self.donation.busy = lambda: self.scheduler.busy
        self.donation.release = self.scheduler.release_current
        self.donation.database_ok = lambda: self.heartbeat.database_ok
        self.admin_db: Database | None = None
        self.maintenance: Maintenance | None = None
        self.login_links = LoginLinks()
        self.notifier: Callable[[str], None] | None = None
        self.request_shutdown: Callable[[], None] = lambda: None
        self.connections = ConnectionGuard(connection_limits or ConnectionLimits())
        self.loops: dict[str, LoopStatus] = {}
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def settings(self) -> Settings:
        """The settings in force."""
        return self.donation.settings

    # ----- views -----

    @property
    def dashboard_url(self) -> str:
        """The dashboard's base URL."""
        host = self.settings.dashboard_host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.dashboard_port}/"

    def login_url(self) -> str:
        """A one-time link that signs a browser in to the dashboard."""
        return f"{self.dashboard_url}login?token={self.login_links.issue()}"

    def describe(self) -> dict[str, Any]:
        """A summary of this agent for pages, the API and the tray."""
        return {
            "client_id": self.client_id,
            "hostname": self.hostname,
            "farm_name": self.settings.farm_name,
            "version": __version__,
            "database": self.db.display_url,
            "database_ok": self.heartbeat.database_ok,
            "paused": self.donation.paused,
            "dashboard_url": self.dashboard_url,
            "peer_port": self.peer_port,
            "started_at": self.started_at.isoformat(),
            "donation": self.donation.state(),
            "work": self.scheduler.describe(),
            "peer_count": len(self.registry.verified()),
            "loops": {name: status.state for name, status in self.loops.items()},
            "connections": self.connections.describe(),
            "training": {"available": self.training_unavailable is None, "reason": self.training_unavailable},
        }

    def peer_status(self) -> dict[str, Any]:
        """What the peer API's status route tells other agents."""
        return {
            "client_id": self.client_id,
            "hostname": self.hostname,
            "farm_name": self.settings.farm_name,
            "version": __version__,
            "peer_port": self.peer_port,
            "addresses": [{"ip": a.ip, "prefix": a.prefix} for a in local_addresses() if not a.is_loopback],
            "paused": self.donation.paused,
        }

    def session_info(self) -> dict[str, Any]:
        """The clients.session_info of this run of the agent."""
        return {
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "farm_name": self.settings.farm_name,
            "addresses": [{"ip": a.ip, "prefix": a.prefix, "interface": a.interface} for a in local_addresses()],
            "dashboard_port": self.dashboard_port,
            "peer_port": self.peer_port,
            "donation": "paused" if self.donation.paused else "donating",
            "reach": self.discovery.reach,
        }

    def peers_view(self) -> dict[str, Any]:
        """The registry's snapshot plus what each peer says about reaching us (pairs)."""
        view = self.registry.snapshot()
        for peer in view["peers"]:
            state = self.registry.get(peer["client_id"])
            peer["reaches_us"] = state.extra.get("reach_back") if state else None
        view["links"] = self.links.snapshot()
        return view

    def write_backlog(self) -> dict[str, int]:
        """Rows waiting to be written: lifecycle log lines and the current task's batched reports."""
        run = self.scheduler.current
        return {"client_logs": self.events.backlog, **(run.backlog() if run else {"task_logs": 0, "metrics": 0})}

    def _task_ended(self, run: TaskRun, outcome: Outcome) -> None:
        if self.notifier is not None and outcome.kind in ("completed", "failed", "error"):
            name = run.config.get("name", run.task_id)
            text = {"completed": "completed", "failed": "failed (it will be retried)", "error": "failed for good"}[outcome.kind]
            self.notifier(f"Task {name} {text}")
        self.donation.task_ended()

    # ----- lifecycle -----

    def _dashboard_deps(self) -> Any:
        from app.web.deps import DashboardDeps

        return DashboardDeps(
            db=self.db, client_id=self.client_id, api_token=self.api_token, catalog=self.catalog,
            donation=self.donation, login_links=self.login_links, describe=self.describe, peers_view=self.peers_view,
            work=self.scheduler.describe, write_backlog=self.write_backlog, maintenance=lambda: self.maintenance,
            fetch_file=self.peer_files.fetch, login_url=self.login_url, request_shutdown=lambda: self.request_shutdown())

    async def start(self) -> None:
        """Serve, register, advertise, then start the background loops."""
        from app.peerapi.members import FarmMembers
        from app.peerapi.server import PeerDeps, create_peer_app
        from app.web.app import create_dashboard_app

        self.dashboard_port = await self._start_site(create_dashboard_app(self._dashboard_deps()),
                                                     self.settings.dashboard_host, self.settings.dashboard_port,
                                                     "dashboard", "--port")
        peer_deps = PeerDeps(self.settings.data_dir, lambda: self.farm_secret, self.peer_status, self.peer_files.fetch)
        self.peer_port = await self._start_site(create_peer_app(peer_deps, FarmMembers(self.db, self.settings.farm_name)),
                                                self.settings.peer_host, self.settings.peer_port, "peer API", "--peer-port")
        await self.peer_client.start()
        async with self.db.begin() as conn:
            self.farm_secret = await farm_queries.ensure_secret(conn, self.settings.farm_name)
        await self.heartbeat.register()
        self.events("info", f"agent started (version {__version__}, pid {os.getpid()}, "
                            f"dashboard {self.dashboard_port}, peer API {self.peer_port})")
        await self.events.flush(self.db)
        await self.discovery.start()
        write_agent_file(
            self.settings.data_dir,
            {"pid": os.getpid(), "client_id": self.client_id, "dashboard_port": self.dashboard_port,
             "dashboard_host": self.settings.dashboard_host, "peer_port": self.peer_port},
        )
        await self.scheduler.void_previous_session()
        self._start_loops()

    def _start_loops(self) -> None:
        self._spawn_loop(self.heartbeat.loop, "heartbeat")
        self.admin_db = create_database(self.settings.admin_database_url) if self.settings.admin_database_url else None
        self.maintenance = Maintenance(self.db, self.settings, self.client_id, self.admin_db, on_event=self.events)
        self._spawn_loop(self.maintenance.loop, "maintenance")
        self._spawn_loop(self.discovery.verify_loop, "verify-peers")
        self._spawn_loop(self.discovery.manual_loop, "manual-peers")
        self._spawn_loop(self.discovery.reach_loop, "reachability")
        self._spawn_loop(self._events_loop, "peer-events")
        self._spawn_loop(self.scheduler.claim_loop, "scheduler")
        self._spawn_loop(self.failures.loop, "failure-sweep")
        self._spawn_loop(self.machine.loop, "performance-metrics")
        self._spawn_loop(self.donation.rules_loop, "donation-rules")
        self._spawn_loop(self.replicator.loop, "replicator")
        self._spawn_loop(self.links.loop, "link-probe")

    async def stop(self) -> None:
        """Release work (emergency checkpoint), stop loops, say goodbye, mark inactive, close everything."""
        try:
            await self.scheduler.close("the agent is stopping")
        except Exception:  # stopping must go on
            log.exception("could not release the current task cleanly")
        self._stopping = True
        await self._stop_tasks()
        try:
            await asyncio.wait_for(self.discovery.stop(), STOP_STEP_SECONDS)
        except (asyncio.TimeoutError, OSError) as exc:
            log.warning("zeroconf goodbye not sent: %s", exc or "timed out")
        remove_agent_file(self.settings.data_dir)
        self._collect_registry_events()
        self.events("info", "agent stopped")
        try:
            await asyncio.wait_for(self._mark_inactive(), STOP_STEP_SECONDS)
        except (*DB_ERRORS, asyncio.TimeoutError) as exc:
            log.warning("could not mark this client inactive: %s", exc or "timed out")
        await self.heartbeat.close()
        await self.peer_client.close()
        if self.admin_db is not None:
            await self.admin_db.dispose()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.db.dispose()

    async def _stop_tasks(self) -> None:
        # Cancelled between transactions, never inside one (see Database.quiesce).
        databases = [db for db in (self.db, self.admin_db) if db is not None]
        busy = [await db.quiesce(STOP_STEP_SECONDS) for db in databases]
        if any(busy):
            log.warning("%d database call(s) still under way after %.0f s; stopping anyway", sum(busy), STOP_STEP_SECONDS)
        for task in reversed(self._tasks):
            task.cancel()
        if self._tasks:
            # A loop blocked in a database call (SQLite's busy wait, a dead server) must not hold up Ctrl-C.
            done, stuck = await asyncio.wait(self._tasks, timeout=STOP_STEP_SECONDS)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("background task %s failed: %s", task.get_name(), task.exception())
            for task in stuck:
                log.warning("background task %s did not stop in %.0f s; leaving it", task.get_name(), STOP_STEP_SECONDS)
        self._tasks.clear()
        for db in databases:
            db.resume()  # the loops are gone: what stopping still writes runs in tasks of its own (wait_for)

    async def _mark_inactive(self) -> None:
        async with self.db.begin() as conn:
            await client_queries.set_client_status(conn, self.client_id, "inactive")
        await self.events.flush(self.db)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks and not self._stopping:
            self._tasks.remove(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("background task %s failed: %s", task.get_name(), task.exception())

    def _spawn_loop(self, body: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run a background loop under supervision: restarted with backoff after any failure."""
        status = self.loops[name] = LoopStatus(name)
        self._spawn(supervise(body, status), name)

    async def _start_site(self, app: web.Application, host: str, port: int, what: str, flag: str) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0,
                               keepalive_timeout=self.connections.limits.keepalive_timeout)
        await runner.setup()
        site = GuardedSite(runner, host, port, self.connections)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AifarmError(f"cannot listen on {host}:{port} for the {what}: {exc.strerror}; choose another port with {flag}") from None
        self._runners.append(runner)
        return site.port

    # ----- peers -----

    def _collect_registry_events(self) -> None:
        for log_type, message in self.registry.drain_events():
            self.events(log_type, message)

    async def _events_loop(self) -> None:
        """Move discovery events to the log, end a run whose member vanished, and learn how peers see us."""
        while True:
            await asyncio.sleep(1.0)
            self._collect_registry_events()
            lost = self.registry.drain_lost()
            run = self.scheduler.current
            if run is not None and lost & run.members:
                gone = ", ".join(sorted(lost & run.members))
                self.events("warning", f"task {run.task_id}: group member {gone} vanished from the LAN; ending the attempt")
                run.abort(f"group member {gone} vanished from the LAN")
            if self.heartbeat.database_ok:
                await self._learn_reach_back()

    async def _learn_reach_back(self) -> None:
        ids = [state.peer.client_id for state in self.registry.verified()]
        if not ids:
            return
        try:
            async with self.db.connect() as conn:
                rows = await client_queries.get_clients(conn, ids)
        except DB_ERRORS:
            return
        for row in rows:
            state = self.registry.get(row["id"])
            reach = (row.get("session_info") or {}).get("reach", {}) if isinstance(row.get("session_info"), dict) else {}
            if state is not None:
                state.extra["reach_back"] = reach.get(self.client_id)


async def run_until_stopped(settings: Settings, *, headless: bool = True,
                            reload: Callable[[], Settings] | None = None,
                            on_started: Callable[[Agent, Callable[[], None]], None] | None = None,
                            install_signals: bool = True) -> int:
    """Run an agent until SIGINT or SIGTERM; returns the exit code."""
    loop = asyncio.get_running_loop()
    limits = ConnectionLimits.for_open_files(raise_open_files_limit())
    throttle_accept_errors(loop, ThrottledLog(log))
    if settings.database_url is None:
        # The embedded database is this agent's own file: keep it at the current schema by itself.
        embedded = create_database(settings.effective_database_url)
        try:
            if await current_revision(embedded) != head_revision():  # alembic is imported only to upgrade
                before, after = await upgrade(embedded)
                log.info("embedded database %s at schema revision %s (was %s)", settings.sqlite_path, after, before)
        finally:
            await embedded.dispose()
    db = await open_current_database(settings.effective_database_url)
    agent = Agent(settings, db, headless=headless, reload=reload, connection_limits=limits)
    stop = asyncio.Event()
    restore_signals = install_stop_signals(loop, stop.set) if install_signals else None
    agent.request_shutdown = stop.set
    try:
        await agent.start()
        print(f"AI Farm agent {agent.client_id} running; dashboard at {agent.dashboard_url}", flush=True)
        print(f"Sign in to the dashboard (one-time link): {agent.login_url()}", flush=True)
        log.info("agent %s running; dashboard at %s (`aifarm dashboard` prints a sign-in link)",
                 agent.client_id, agent.dashboard_url)
        if agent.training_unavailable:
            log.warning("%s; it serves its dashboard and the peer API and claims no task", agent.training_unavailable)
        if headless:
            log.info("running headless: no tray icon")
        if on_started is not None:
            on_started(agent, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        if restore_signals is not None:
            restore_signals()
        await agent.stop()
    print("AI Farm agent stopped", file=sys.stderr, flush=True)
    return 0
