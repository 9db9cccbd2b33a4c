"""Donation preferences: the schedule, battery, idle and heat rules, and their effect on claims and workers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app.config import load_settings
from app.donation import (
    MachineState,
    Rules,
    blockers,
    idle_seconds,
    idle_support,
    in_schedule,
    on_battery,
    parse_mutter_idletime,
    parse_schedule,
    read_state,
    windows_idle_ms,
)
from app.errors import ConfigError

MONDAY_NOON = datetime(2026, 11, 23, 12, 0)


def machine(**changes: Any) -> MachineState:
    """A machine on mains power, idle for an hour, cool, at Monday noon."""
    values: dict[str, Any] = {"idle_seconds": 3600.0, "on_battery": False, "gpu_temperatures": (50.0,), "now": MONDAY_NOON}
    values.update(changes)
    return MachineState(**values)


@pytest.mark.parametrize(("text", "when", "inside"), [
    ("mon-fri 09:00-17:00", datetime(2026, 11, 23, 12, 0), True),
    ("mon-fri 09:00-17:00", datetime(2026, 11, 23, 17, 0), False),
    ("mon-fri 09:00-17:00", datetime(2026, 11, 28, 12, 0), False),  # saturday
    ("mon-fri 18:00-08:00", datetime(2026, 11, 24, 7, 59), True),  # tuesday morning, from monday night
    ("mon-fri 18:00-08:00", datetime(2026, 11, 23, 7, 59), False),  # monday morning: sunday is not in it
    ("sat,sun 00:00-24:00; wed 12:00-13:00", datetime(2026, 11, 29, 23, 59), True),
    ("sat,sun 00:00-24:00; wed 12:00-13:00", datetime(2026, 11, 25, 12, 30), True),
    ("fri-mon 22:00-06:00", datetime(2026, 11, 23, 23, 0), True),  # wrapping day range
])
def test_schedule_windows(text: str, when: datetime, inside: bool) -> None:
    """Day ranges, lists, overnight windows."""
    assert in_schedule(text, when) is inside


@pytest.mark.parametrize("text", ["", "mon 9-17", "funday 09:00-10:00", "mon 25:00-26:00", "mon 10:61-11:00"])
def test_bad_schedules_are_refused(text: str) -> None:
    """A malformed schedule is an error naming the part."""
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_bad_schedule_setting_names_the_setting(tmp_path: Path) -> None:
    """Through the settings: the message names schedule and the value."""
    with pytest.raises(ConfigError, match="schedule"):
        load_settings(env={"AIFARM_SCHEDULE": "weekdays"}, config_file=tmp_path / "none.toml")


def test_each_rule_blocks_with_its_reason() -> None:
    """Schedule, battery, idle and temperature each stop work and say why; nothing blocks by default."""
    assert blockers(Rules(), machine()) == []
    assert "outside the donation schedule" in blockers(Rules(schedule="sat,sun 00:00-24:00"), machine())[0]
    assert blockers(Rules(pause_on_battery=True), machine(on_battery=True)) == ["running on battery"]
    assert blockers(Rules(pause_on_battery=False), machine(on_battery=True)) == []
    assert "in use" in blockers(Rules(idle_only=True, idle_minutes=5), machine(idle_seconds=30.0))[0]
    assert blockers(Rules(idle_only=True, idle_minutes=5), machine(idle_seconds=600.0)) == []
    assert "85 °C" in blockers(Rules(max_gpu_temperature=80), machine(gpu_temperatures=(60.0, 85.0)))[0]


def test_unknown_platform_state_never_blocks() -> None:
    """Where the platform cannot tell (no battery sensor, no idle source), the rules do not invent a reason."""
    assert blockers(Rules(idle_only=True, pause_on_battery=True), machine(idle_seconds=None, on_battery=None)) == []


def test_platform_readers_here() -> None:
    """On this headless machine: no battery, no idle source, and the idle support line says why."""
    assert on_battery() in (None, False, True)
    state = read_state([{"temperature_c": 71}], now=MONDAY_NOON)
    assert state.gpu_temperatures == (71.0,)
    if state.idle_seconds is None:
        assert "not available" in idle_support()


async def test_preferences_change_what_the_agent_claims_and_how_workers_run(tmp_path: Path, sqlite_url: str) -> None:
    """cpu_threads, ram and GPU caps change the capacity the scheduler claims with and the worker's threads;
    a schedule that excludes now stops claiming; changing a preference applies without a restart."""
    from app.agent import Agent
    from app.db.engine import create_database
    from app.db.migrate import upgrade
    from app.db.queries import tasks as task_queries
    from app.scheduling import claiming
    from app.settings_file import update_local

    db = create_database(sqlite_url)
    await upgrade(db)
    data_dir = tmp_path / "d"

    def settings() -> Any:
        return load_settings(env={}, cli={"data_dir": str(data_dir)}, config_file=tmp_path / "none.toml")

    agent = Agent(settings(), db, reload=settings)
    await agent.heartbeat.register()
    donation = agent.donation
    donation.inventory = {"cpu": {"logical_cores": 8}, "ram": {"total_mb": 16000},
                       "gpus": [{"index": 0, "memory_total_mb": 8000}, {"index": 1, "memory_total_mb": 24000}]}
    assert donation.capacity().cpu_cores == 8 and donation.capacity().gpu_memory_mb == 24000
    assert donation.training_threads() == 7

    update_local(data_dir, {"cpu_threads": 2, "ram_limit_mb": 4000, "gpu_memory_limit_mb": 6000, "gpus": [0]})
    await donation.reload_settings()
    capacity = donation.capacity()
    assert (capacity.cpu_cores, capacity.ram_mb, capacity.gpu_memory_mb) == (2, 4000, 6000)
    assert donation.training_threads() == 2
    assert donation.device_spec() == {"device": "cuda:0", "gpu_memory_fraction": 0.75}

    async with db.begin() as conn:
        big = await task_queries.insert_task(conn, type="training", requirements={"min_ram": 8000},
                                             config={"name": "big"}, priority=5)
        small = await task_queries.insert_task(conn, type="training", requirements={"min_ram": 2000},
                                               config={"name": "small"}, priority=1)
    async with db.begin() as conn:
        claim = await claiming.claim_next(conn, agent.client_id, donation.capacity())
    assert claim is not None and claim.task_id == small and claim.task_id != big

    assert donation.may_claim()
    update_local(data_dir, {"schedule": "sat,sun 00:00-24:00" if datetime.now().weekday() < 5 else "mon-fri 00:00-24:00"})
    await donation.reload_settings()
    assert not donation.may_claim() and "outside the donation schedule" in donation.blockers()[0]
    await db.dispose()


def _fake_gdbus(tmp_path: Path, reply: str, code: int = 0) -> None:
    gdbus = tmp_path / "gdbus"
    gdbus.write_text(f"#!/bin/sh\ncase \"$*\" in *org.gnome.Mutter.IdleMonitor.GetIdletime*) ;; *) exit 3;; esac\n"
                     f"printf '%s\\n' '{reply}'\nexit {code}\n", encoding="utf-8")
    gdbus.chmod(0o755)


def test_wayland_session_reads_mutter_idle_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Wayland the idle time comes from GNOME's IdleMonitor, never from XWayland's DISPLAY."""
    _fake_gdbus(tmp_path, "(uint64 42000,)")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    monkeypatch.setenv("DISPLAY", ":0")
    assert idle_seconds() == 42.0
    assert "Mutter" in idle_support()


def test_wayland_without_an_idle_monitor_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Wayland session without Mutter's monitor reports no idle time and says plainly why."""
    _fake_gdbus(tmp_path, "Error: GDBus.Error:org.freedesktop.DBus.Error.ServiceUnknown", code=1)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    monkeypatch.setenv("DISPLAY", ":0")
    assert idle_seconds() is None
    line = idle_support()
    assert line.startswith("not available") and "Wayland" in line


@pytest.mark.parametrize("reply, seconds", [("(uint64 42000,)", 42.0), ("(uint64 0,)", 0.0), ("(1500,)", 1.5),
                                            ("", None), ("(true,)", None), ("(uint64 -5,)", None)])
def test_parse_mutter_idletime(reply: str, seconds: float | None) -> None:
    """gdbus's reply in milliseconds becomes seconds; anything else is None."""
    assert parse_mutter_idletime(reply) == seconds


@pytest.mark.parametrize("tick64, last_input, elapsed", [
    (10_000, 9_000, 1_000),
    (2**31 + 1_000, 2**31 + 10, 990),           # past 24.8 days, where a signed 32-bit tick turns negative
    (2**32 + 100, (2**32 - 400) & 0xFFFFFFFF, 500),  # across the 49.7-day wrap of the 32-bit counter
    (5 * 2**32 + 7, 3, 4),
])
def test_windows_idle_survives_tick_counter_wraps(tick64: int, last_input: int, elapsed: int) -> None:
    """The 64-bit tick count against GetLastInputInfo's 32-bit tick: right after 24.8 and 49.7 days."""
    assert windows_idle_ms(tick64, last_input) == elapsed
