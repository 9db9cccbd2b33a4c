"""The volunteer's say: the current settings, pause and snooze, the donation rules, and the capacity offered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from app.config import Settings
from app.donation import Rules, blockers, read_state
from app.prefs import PREFS
from app.scheduling.decide import Capacity, cpu_cores_of, ram_of

EventSink = Callable[[str, str], None]
RULES_INTERVAL = 5.0


class Donation:
    """What this machine may do now, by its volunteer's settings, rules and pause; owns the settings in force."""

    def __init__(self, settings: Settings, events: EventSink, *, reload: Callable[[], Settings] | None = None,
                 training_unavailable: str | None = None) -> None:
        self.settings = settings
        self.events = events
        self.paused = settings.paused
        self.paused_until: float | None = None
        self.pause_after_current = False
        self.training_unavailable = training_unavailable
        self.inventory: dict[str, Any] = {"cpu": {}, "ram": {}, "gpus": []}
        self.last_blockers: list[str] = []
        self._reload = reload
        # Set by the composition root once the scheduler exists: whether work is held, and how to give it back.
        self.busy: Callable[[], bool] = lambda: False
        self.release: Callable[[str], Awaitable[None]] = _nothing_to_release
        self.database_ok: Callable[[], bool] = lambda: True

    def state(self) -> dict[str, Any]:
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
                "on_hold": self.last_blockers}

    def rules(self) -> Rules:
        """The donation rules from the current settings."""
        s = self.settings
        return Rules(s.idle_only, s.idle_minutes, s.schedule, s.pause_on_battery, s.max_gpu_temperature)

    def blockers(self) -> list[str]:
        """Why the volunteer's rules forbid work right now (empty: work is allowed)."""
        return blockers(self.rules(), read_state(self.allowed_gpus()))

    def may_claim(self) -> bool:
        """True when the volunteer allows new work now."""
        return (self.training_unavailable is None and not self.state()["paused"]
                and not self.pause_after_current and self.database_ok() and not self.blockers())

    async def reload_settings(self) -> None:
        """Re-read the settings files (prefs changed): limits and rules apply from the next decision on."""
        if self._reload is None:
            return
        new = await asyncio.to_thread(self._reload)
        changed = [name for name in PREFS if getattr(new, name) != getattr(self.settings, name)]
        self.settings = new
        if "paused" in changed:
            self.paused = new.paused
        if changed:
            self.events("info", f"preferences changed: {', '.join(changed)}")

    async def rules_loop(self) -> None:
        """Release the current work (emergency checkpoint) as soon as a donation rule forbids working."""
        announced: tuple[str, ...] = ()
        while True:
            await asyncio.sleep(RULES_INTERVAL)
            reasons = tuple(await asyncio.to_thread(self.blockers))
            self.last_blockers = list(reasons)
            if reasons != announced and reasons:
                self.events("info", "donation on hold: " + "; ".join(reasons))
            elif reasons != announced:
                self.events("info", "donation rules allow work again")
            announced = reasons
            if reasons and self.busy():
                await self.release("; ".join(reasons))

    async def pause(self, *, seconds: float | None = None, finish_current: bool = False) -> None:
        """Stop claiming; release the current task at once unless it may finish first."""
        if finish_current and self.busy():
            self.pause_after_current = True
            self.events("info", "donation: finishing the current task, then pausing")
            return
        self.paused = True
        self.paused_until = time.time() + seconds if seconds else None
        self.events("info", f"donation paused{f' for {seconds:.0f} s' if seconds else ''}")
        await self.release("the volunteer paused donation")

    async def resume(self) -> None:
        """Donate again."""
        self.paused, self.paused_until, self.pause_after_current = False, None, False
        self.events("info", "donation resumed")

    def task_ended(self) -> None:
        """A task of this machine ended: a pause that waited for it starts now."""
        if self.pause_after_current:
            self.pause_after_current = False
            self.paused = True
            self.events("info", "donation paused after the current task")

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
        if gpu.get("backend") == "mps":
            return {"device": "mps"}
        spec: dict[str, Any] = {"device": f"cuda:{gpu.get('index', 0)}"}
        total = gpu.get("memory_total_mb")
        if self.settings.gpu_memory_limit_mb and total:
            spec["gpu_memory_fraction"] = min(1.0, self.settings.gpu_memory_limit_mb / float(total))
        return spec


async def _nothing_to_release(reason: str) -> None:
    return None
