"""The composition root: builds the agent's parts from the settings, runs them, and stops them in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from app import __version__, inventory
from app.config import Settings
from app.db.engine import Database, create_database
from app.db.migrate import open_current_database, upgrade
from app.db.queries import clients as client_queries
from app.db.queries import farms as farm_queries
from app.db.queries import logs as log_queries
from app.discovery.registry import PeerRegistry
from app.discovery.service import DiscoveryService
from app.donation import Rules, blockers, read_state
from app.errors import AifarmError, DatabaseUnavailable
from app.fdlimit import raise_open_files_limit
from app.identity import load_or_create_client_id
from app.netguard import ConnectionGuard, ConnectionLimits, GuardedSite, ThrottledLog, throttle_accept_errors
from app.netinfo import local_addresses
from app.operations.maintenance import Maintenance
from app.peerapi.client import PeerClient
from app.runtime_files import load_or_create_api_token, remove_agent_file, write_agent_file
from app.scheduling.decide import Capacity, cpu_cores_of, ram_of
from app.scheduling.scheduler import Scheduler
from app.stopsignals import install_stop_signals
from app.supervise import LoopStatus, supervise
from app.training.capability import training_unavailable
from app.training.catalog import Catalog
from app.web.security import LoginLinks

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
MAX_BUFFERED_LOGS = 10_000
METRICS_INTERVAL = 10.0
RULES_INTERVAL = 5.0
STOP_STEP_SECONDS = 5.0
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)


class Agent:
    """One machine's agent: registration, heartbeat, discovery, peer API, dashboard; owns its background tasks."""

    def __init__(self, settings: Settings, db: Database, *, headless: bool = True,
                 reload: Callable[[], Settings] | None = None,
                 connection_limits: ConnectionLimits | None = None) -> None:
        self.settings = settings
        self.db = db
        self.headless = headless
        self.client_id = load_or_create_client_id(settings.data_dir)
        self.api_token = load_or_create_api_token(settings.data_dir)
        self.hostname = socket.gethostname()
        self.started_at = datetime.now(timezone.utc)
        self.paused = settings.paused
        self.database_ok = True
        self.database_ok_since = time.monotonic()
        self.farm_secret: str | None = None
        self.dashboard_port: int | None = None
        self.peer_port: int | None = None
        self.registry = PeerRegistry(self.client_id, settings.farm_name)
        self.peer_client = PeerClient(self.client_id, self)
        self.discovery = DiscoveryService(
            db=db,
            registry=self.registry,
            client=self.peer_client,
            client_id=self.client_id,
            farm_name=settings.farm_name,
            version=__version__,
            manual_peers=settings.peers,
            peer_port=lambda: self.peer_port or 0,
            verify_interval=min(settings.heartbeat_interval, 2.0),
            use_mdns=settings.mdns,
        )
        self.catalog = Catalog.load()
        self.inventory: dict[str, Any] = {"cpu": {}, "ram": {}, "gpus": []}
        self.paused_until: float | None = None
        self.pause_after_current = False
        self.scheduler = Scheduler(self)
        self.admin_db: Database | None = None
        self.maintenance: Maintenance | None = None
        self.login_links = LoginLinks()
        self._reload = reload
        self.notifier: Callable[[str], None] | None = None
        self.request_shutdown: Callable[[], None] = lambda: None
        self.training_unavailable = training_unavailable()
        self._last_blockers: list[str] = []
        self._pending_logs: list[tuple[str, str, datetime]] = []
        self._published_reach: dict[str, Any] = {}
        self.connections = ConnectionGuard(connection_limits or ConnectionLimits())
        self.loops: dict[str, LoopStatus] = {}
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

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
            "database_ok": self.database_ok,
            "paused": self.paused,
            "dashboard_url": self.dashboard_url,
            "peer_port": self.peer_port,
            "started_at": self.started_at.isoformat(),
            "donation": self.donation_state(),
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
            "paused": self.paused,
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
            "donation": "paused" if self.paused else "donating",
            "reach": self.discovery.reach,
        }

    def peers_view(self) -> dict[str, Any]:
        """The registry's snapshot plus what each peer says about reaching us (pairs)."""
        view = self.registry.snapshot()
        for peer in view["peers"]:
            state = self.registry.get(peer["client_id"])
            back = state.extra.get("reach_back") if state else None
            peer["reaches_us"] = back
        return view

    # ----- donation and capacity -----

    def write_backlog(self) -> dict[str, int]:
        """Rows waiting to be written: lifecycle log lines and the current task's batched reports."""
        run = self.scheduler.current
        return {
            "client_logs": len(self._pending_logs),
            "task_logs": len(run.buffer.logs) if run else 0,
            "metrics": len(run.buffer.perf) + len(run.buffer.curve) if run else 0,
        }

    def donation_state(self) -> dict[str, Any]:
        """Paused or donating, until when, and whether the current task finishes first."""
        if self.paused_until is not None and time.time() >= self.paused_until:
            self.paused, self.paused_until = False, None
        until = datetime.fromtimestamp(self.paused_until, timezone.utc).isoformat() if self.paused_until else None
        if self.pause_after_current:
            summary = "finishing the current task, then pausing"
        elif self.paused:
            summary = f"paused until {until}" if until else "paused"
        else:
            summary = "donating"
        return {"paused": self.paused, "until": until, "finish_current": self.pause_after_current, "summary": summary,
                "on_hold": self._last_blockers}

    def rules(self) -> Rules:
        """The donation rules from the current settings."""
        s = self.settings
        return Rules(s.idle_only, s.idle_minutes, s.schedule, s.pause_on_battery, s.max_gpu_temperature)

    def blockers(self) -> list[str]:
        """Why the volunteer's rules forbid work right now (empty: work is allowed)."""
        return blockers(self.rules(), read_state(self.allowed_gpus()))

    def may_claim(self) -> bool:
        """True when the volunteer allows new work now."""
        return (self.training_unavailable is None and not self.donation_state()["paused"]
                and not self.pause_after_current and self.database_ok and not self.blockers())

    async def reload_settings(self) -> None:
        """Re-read the settings files (prefs changed): limits and rules apply from the next decision on."""
        if self._reload is None:
            return
        new = await asyncio.to_thread(self._reload)
        changed = [k for k in ("cpu_threads", "ram_limit_mb", "gpu_memory_limit_mb", "gpus", "idle_only", "idle_minutes",
                               "schedule", "pause_on_battery", "max_gpu_temperature", "paused")
                   if getattr(new, k) != getattr(self.settings, k)]
        self.settings = new
        if "paused" in changed:
            self.paused = new.paused
        if changed:
            self.log_event("info", f"preferences changed: {', '.join(changed)}")

    async def _rules_loop(self) -> None:
        """Release the current work (emergency checkpoint) as soon as a donation rule forbids working."""
        announced: tuple[str, ...] = ()
        while True:
            await asyncio.sleep(RULES_INTERVAL)
            reasons = tuple(await asyncio.to_thread(self.blockers))
            self._last_blockers = list(reasons)
            if reasons != announced and reasons:
                self.log_event("info", "donation on hold: " + "; ".join(reasons))
            elif reasons != announced:
                self.log_event("info", "donation rules allow work again")
            announced = reasons
            if reasons and self.scheduler.busy:
                await self.scheduler.release_current("; ".join(reasons))

    async def pause(self, *, seconds: float | None = None, finish_current: bool = False) -> None:
        """Stop claiming; release the current task at once unless it may finish first."""
        if finish_current and self.scheduler.busy:
            self.pause_after_current = True
            self.log_event("info", "donation: finishing the current task, then pausing")
            return
        self.paused = True
        self.paused_until = time.time() + seconds if seconds else None
        self.log_event("info", f"donation paused{f' for {seconds:.0f} s' if seconds else ''}")
        await self.scheduler.release_current("the volunteer paused donation")

    async def resume(self) -> None:
        """Donate again."""
        self.paused, self.paused_until, self.pause_after_current = False, None, False
        self.log_event("info", "donation resumed")

    def on_task_ended(self, run: Any, outcome: Any) -> None:
        """Called by the scheduler when this machine's rank of a task ended."""
        if self.notifier is not None and outcome.kind in ("completed", "failed", "error"):
            name = run.config.get("name", run.task_id)
            text = {"completed": "completed", "failed": "failed (it will be retried)", "error": "failed for good"}[outcome.kind]
            self.notifier(f"Task {name} {text}")
        if self.pause_after_current:
            self.pause_after_current = False
            self.paused = True
            self.log_event("info", "donation paused after the current task")

    def capacity(self) -> Capacity:
        """What this machine offers after the volunteer's limits."""
        gpus = self.allowed_gpus()
        gpu_memory = max((int(g.get("memory_total_mb") or 0) for g in gpus), default=0)
        if self.settings.gpu_memory_limit_mb is not None:
            gpu_memory = min(gpu_memory, self.settings.gpu_memory_limit_mb)
        cores = self.settings.cpu_threads or cpu_cores_of(self.inventory["cpu"])
        ram = ram_of(self.inventory["ram"])
        if self.settings.ram_limit_mb is not None:
            ram = min(ram, self.settings.ram_limit_mb)
        return Capacity(gpu_memory, cores, ram)

    def allowed_gpus(self) -> list[dict[str, Any]]:
        """The GPUs the volunteer allows training to use."""
        gpus = [g for g in self.inventory["gpus"] if isinstance(g, dict)]
        if self.settings.gpus is not None:
            gpus = [g for g in gpus if g.get("index") in self.settings.gpus]
        return gpus

    def training_threads(self) -> int:
        """Threads per worker: the volunteer's limit, else all cores but one."""
        return self.settings.cpu_threads or max(1, cpu_cores_of(self.inventory["cpu"]) - 1)

    def device_spec(self) -> dict[str, Any]:
        """Where the worker trains: the first allowed GPU, else the CPU; with the memory cap."""
        gpus = self.allowed_gpus()
        if not gpus:
            return {"device": "cpu"}
        gpu = gpus[0]
        spec: dict[str, Any] = {"device": f"cuda:{gpu.get('index', 0)}"}
        total = gpu.get("memory_total_mb")
        if self.settings.gpu_memory_limit_mb and total:
            spec["gpu_memory_fraction"] = min(1.0, self.settings.gpu_memory_limit_mb / float(total))
        return spec

    async def backend_for(self, task_id: int, n_clients: int) -> str:
        """NCCL when every rank of the task has a GPU, gloo otherwise."""
        if n_clients == 1 or not self.allowed_gpus():
            return "gloo"
        from app.db.queries import claims as claim_queries
        from app.scheduling.decide import choose_backend, gpu_memory_of

        async with self.db.connect() as conn:
            members = (await claim_queries.members_of_running(conn, task_id)).get(task_id, {}).get("members", [])
            rows = [await client_queries.get_client(conn, m["client_id"]) for m in members]
        return choose_backend(bool(rows) and all(row and gpu_memory_of(row["gpu_info"]) > 0 for row in rows))

    async def fetch_checkpoint(self, owner_id: str | None, relative: str, sha256: str) -> Path | None:
        """A verified local copy of a checkpoint file (fetched from its owner's peer API when remote), or None."""
        from app.files import safe_relative, sha256_file

        if not relative or len(sha256) != 64:
            return None
        if owner_id == self.client_id:
            path = safe_relative(self.settings.data_dir, relative)
        else:
            path = safe_relative(self.settings.data_dir, f"fetched/{owner_id}/{relative}")  # id checked too
        if path is None:
            return None
        if path.exists():
            actual = await asyncio.to_thread(sha256_file, path)
            if actual == sha256:
                return path
            self.log_event("warning", f"checkpoint {relative} does not match its sha256 (file altered?); refused")
            if owner_id == self.client_id:
                return None
        if owner_id == self.client_id or owner_id is None:
            return None
        endpoint = await self.peer_endpoint(owner_id)
        if endpoint is None:
            return None
        from app.peerapi.client import PeerError

        try:
            await self.peer_client.download(endpoint[0], endpoint[1], f"/peer/v1/files/{relative}", path, sha256)
        except PeerError as exc:
            self.log_event("warning", f"cannot fetch {relative} from {owner_id}: {exc}")
            return None
        return path

    async def peer_endpoint(self, client_id: str) -> tuple[str, int] | None:
        """Where to reach a client's peer API: the LAN registry, else its registered session."""
        state = self.registry.get(client_id)
        if state is not None and state.verified:
            return state.peer.endpoint()
        async with self.db.connect() as conn:
            row = await client_queries.get_client(conn, client_id)
        if row is None or row["status"] != "active":
            return None
        session = row["session_info"] or {}
        port = session.get("peer_port")
        addresses = [a["ip"] for a in session.get("addresses", []) if isinstance(a, dict) and a.get("ip")]
        if not port or not addresses:
            return None
        non_loopback = [a for a in addresses if not a.startswith("127.")]
        if row.get("hostname") == self.hostname:
            return "127.0.0.1", int(port)
        return (non_loopback or addresses)[0], int(port)

    def after_model_registered(self, name: str, version: str, relative: str, sha256: str) -> None:
        """Copy a new model to one other active peer, in the background."""
        self._spawn(self._replicate(name, version, relative, sha256), f"replicate-{name}-{version}")

    async def _replicate(self, name: str, version: str, relative: str, sha256: str) -> None:
        from app.db.queries import models as model_queries
        from app.peerapi.client import PeerError

        for state in self.registry.verified():
            endpoint = state.peer.endpoint()
            if endpoint is None:
                continue
            try:
                await self.peer_client.post_json(endpoint[0], endpoint[1], "/peer/v1/replicate",
                                                 {"client_id": self.client_id, "path": relative, "sha256": sha256})
            except PeerError as exc:
                self.log_event("warning", f"model {name} v{version}: copy to {state.peer.client_id} failed: {exc}")
                continue
            async with self.db.begin() as conn:
                row = await model_queries.get_version(conn, name, version)
                if row is not None:
                    await model_queries.add_replica(conn, row["id"], state.peer.client_id)
            self.log_event("info", f"model {name} v{version} copied to {state.peer.client_id}")
            return

    # ----- lifecycle -----

    async def start(self) -> None:
        """Serve, register, advertise, then start the background loops."""
        await self._start_site(self._dashboard_app(), self.settings.dashboard_host, self.settings.dashboard_port, "dashboard", "--port")
        from app.peerapi.members import FarmMembers
        from app.peerapi.server import create_peer_app

        peer_app = create_peer_app(self, FarmMembers(self.db, self.settings.farm_name))
        self.peer_port = await self._start_site(peer_app, self.settings.peer_host, self.settings.peer_port, "peer API", "--peer-port")
        await self.peer_client.start()
        async with self.db.begin() as conn:
            self.farm_secret = await farm_queries.ensure_secret(conn, self.settings.farm_name)
        await self.register()
        self.log_event("info", f"agent started (version {__version__}, pid {os.getpid()}, "
                               f"dashboard {self.dashboard_port}, peer API {self.peer_port})")
        await self._flush_logs()
        await self.discovery.start()
        write_agent_file(
            self.settings.data_dir,
            {"pid": os.getpid(), "client_id": self.client_id, "dashboard_port": self.dashboard_port,
             "dashboard_host": self.settings.dashboard_host, "peer_port": self.peer_port},
        )
        self._spawn_loop(self._heartbeat_loop, "heartbeat")
        self.admin_db = create_database(self.settings.admin_database_url) if self.settings.admin_database_url else None
        self.maintenance = Maintenance(self.db, self.settings, self.client_id, self.admin_db, on_event=self.log_event)
        self._spawn_loop(self.maintenance.loop, "maintenance")
        self._spawn_loop(self.discovery.verify_loop, "verify-peers")
        self._spawn_loop(self.discovery.manual_loop, "manual-peers")
        self._spawn_loop(self.discovery.reach_loop, "reachability")
        self._spawn_loop(self._events_loop, "peer-events")
        await self.scheduler.void_previous_session()
        self._spawn_loop(self.scheduler.claim_loop, "scheduler")
        self._spawn_loop(self.scheduler.failure_loop, "failure-sweep")
        self._spawn_loop(self._metrics_loop, "performance-metrics")
        self._spawn_loop(self._rules_loop, "donation-rules")

    async def stop(self) -> None:
        """Release work (emergency checkpoint), stop loops, say goodbye, mark inactive, close everything."""
        try:
            await self.scheduler.release_current("the agent is stopping")
        except Exception:  # stopping must go on
            log.exception("could not release the current task cleanly")
        self._stopping = True
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
        try:
            await asyncio.wait_for(self.discovery.stop(), STOP_STEP_SECONDS)
        except (asyncio.TimeoutError, OSError) as exc:
            log.warning("zeroconf goodbye not sent: %s", exc or "timed out")
        remove_agent_file(self.settings.data_dir)
        self._collect_registry_events()
        self.log_event("info", "agent stopped")

        async def mark_inactive() -> None:
            async with self.db.begin() as conn:
                await client_queries.set_client_status(conn, self.client_id, "inactive")
            await self._flush_logs()

        try:
            await asyncio.wait_for(mark_inactive(), STOP_STEP_SECONDS)
        except (*DB_ERRORS, asyncio.TimeoutError) as exc:
            log.warning("could not mark this client inactive: %s", exc or "timed out")
        await self.peer_client.close()
        if self.admin_db is not None:
            await self.admin_db.dispose()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.db.dispose()

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

    def _dashboard_app(self) -> web.Application:
        from app.web.app import create_dashboard_app

        return create_dashboard_app(self)

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
        bound = site.port
        if what == "dashboard":
            self.dashboard_port = bound
        return bound

    # ----- database work -----

    async def register(self) -> None:
        """Upsert this machine's clients row: inventory, session, active, seen now."""
        cpu, ram, gpus = await asyncio.to_thread(lambda: (inventory.cpu_info(), inventory.ram_info(), inventory.gpu_info()))
        self.inventory = {"cpu": cpu, "ram": ram, "gpus": gpus}
        async with self.db.begin() as conn:
            await client_queries.upsert_client(
                conn,
                client_id=self.client_id,
                cpu_info=cpu,
                ram_info=ram,
                gpu_info=gpus,
                session_info=self.session_info(),
                version=__version__,
                hostname=self.hostname,
            )
        self._published_reach = dict(self.discovery.reach)

    def log_event(self, log_type: str, message: str) -> None:
        """Log a lifecycle event to the Python log now and to client_logs at the next database write."""
        getattr(log, "warning" if log_type == "warning" else log_type)("%s", message)
        if len(self._pending_logs) < MAX_BUFFERED_LOGS:
            self._pending_logs.append((log_type, message, datetime.now(timezone.utc).replace(tzinfo=None)))

    async def _flush_logs(self) -> None:
        if not self._pending_logs:
            return
        entries = list(self._pending_logs)
        async with self.db.begin() as conn:
            await log_queries.add_client_logs(conn, self.client_id, entries)
        del self._pending_logs[: len(entries)]

    def _collect_registry_events(self) -> None:
        for log_type, message in self.registry.drain_events():
            self.log_event(log_type, message)

    async def _heartbeat_loop(self) -> None:
        """Refresh last_seen every heartbeat_interval; survive database outages and re-register after them."""
        delay = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(delay)
            try:
                if not self.database_ok:
                    await self.register()
                else:
                    async with self.db.begin() as conn:
                        if not await client_queries.touch_client(conn, self.client_id):
                            await self.register()
                        elif self.discovery.reach != self._published_reach:
                            await client_queries.update_session_info(conn, self.client_id, self.session_info())
                            self._published_reach = dict(self.discovery.reach)
                was_down = not self.database_ok
                self.database_ok = True
                if was_down:
                    self.database_ok_since = time.monotonic()
                    self.log_event("warning", f"database reachable again; client {self.client_id} re-registered")
                await self._flush_logs()
                delay = self.settings.heartbeat_interval
            except DB_ERRORS as exc:
                if self.database_ok:
                    self.log_event("error", f"database unreachable, retrying with backoff: {exc}")
                self.database_ok = False
                delay = min(max(delay * 2, self.settings.heartbeat_interval), MAX_BACKOFF_SECONDS)

    async def _metrics_loop(self) -> None:
        """Record this machine's CPU, RAM and GPU use in performance_metrics every METRICS_INTERVAL."""
        import psutil

        from app.db.queries import metrics as metric_queries

        psutil.cpu_percent(interval=None)
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            values = [("cpu_percent", psutil.cpu_percent(interval=None)),
                      ("ram_used_mb", psutil.virtual_memory().used / 2**20)]
            if self.inventory["gpus"]:
                self.inventory["gpus"] = await asyncio.to_thread(inventory.gpu_info) or self.inventory["gpus"]
                for gpu in self.inventory["gpus"]:
                    if gpu.get("utilization_pct") is not None:
                        values.append((f"gpu{gpu['index']}_utilization_pct", gpu["utilization_pct"]))
                    values.append((f"gpu{gpu['index']}_memory_used_mb", gpu.get("memory_used_mb") or 0))
            running = self.scheduler.current
            try:
                async with self.db.begin() as conn:
                    await metric_queries.record_metrics(conn, self.client_id, values,
                                                        task_id=running.task_id if running else None)
            except DB_ERRORS as exc:
                log.debug("performance metrics not recorded: %s", exc)

    async def _events_loop(self) -> None:
        """Move discovery events to the log and learn how peers see us."""
        while True:
            await asyncio.sleep(1.0)
            self._collect_registry_events()
            lost = self.registry.drain_lost()
            run = self.scheduler.current
            if run is not None and lost & run.members:
                gone = ", ".join(sorted(lost & run.members))
                self.log_event("warning", f"task {run.task_id}: group member {gone} vanished from the LAN; ending the attempt")
                run.abort(f"group member {gone} vanished from the LAN")
            if not self.database_ok:
                continue
            ids = [state.peer.client_id for state in self.registry.verified()]
            if not ids:
                continue
            try:
                async with self.db.connect() as conn:
                    rows = await client_queries.get_clients(conn, ids)
            except DB_ERRORS:
                continue
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
            before, after = await upgrade(embedded)
            if before != after:
                log.info("embedded database %s at schema revision %s", settings.sqlite_path, after)
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
