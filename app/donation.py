"""The volunteer's donation rules: what the machine reports (idle time, battery, GPU heat, the clock) and the
pure decision of whether it may work now."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s*$")


@dataclass(frozen=True)
class MachineState:
    """What the platform says right now; None where it cannot tell."""

    idle_seconds: float | None
    on_battery: bool | None
    gpu_temperatures: tuple[float, ...]
    now: datetime


@dataclass(frozen=True)
class Rules:
    """The donation preferences that decide whether this machine may work now."""

    idle_only: bool = False
    idle_minutes: int = 5
    schedule: str | None = None
    pause_on_battery: bool = True
    max_gpu_temperature: int | None = None


def parse_schedule(text: str) -> list[tuple[set[int], int, int]]:
    """'mon-fri 18:00-08:00; sat,sun 00:00-24:00' -> [(weekdays, start minute, end minute)]; ValueError if malformed."""
    windows = []
    for part in [p for p in text.lower().split(";") if p.strip()]:
        match = _WINDOW.match(part)
        if not match:
            raise ValueError(f"{part.strip()!r} is not like 'mon-fri 18:00-08:00'")
        days: set[int] = set()
        for item in match.group("days").split(","):
            if "-" in item:
                first, last = item.split("-", 1)
                if first not in DAYS or last not in DAYS:
                    raise ValueError(f"unknown day in {item!r}; use mon..sun")
                a, b = DAYS.index(first), DAYS.index(last)
                days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
            elif item in DAYS:
                days.add(DAYS.index(item))
            else:
                raise ValueError(f"unknown day {item!r}; use mon..sun")
        minutes = []
        for hhmm in (match.group("start"), match.group("end")):
            hours, mins = (int(x) for x in hhmm.split(":"))
            if hours > 24 or mins > 59 or (hours == 24 and mins):
                raise ValueError(f"{hhmm} is not a time of day")
            minutes.append(hours * 60 + mins)
        windows.append((days, minutes[0], minutes[1]))
    if not windows:
        raise ValueError("empty schedule")
    return windows


def in_schedule(text: str, now: datetime) -> bool:
    """True when now falls in a window; a window ending before it starts runs past midnight into the next day."""
    minute = now.hour * 60 + now.minute
    today = now.weekday()
    for days, start, end in parse_schedule(text):
        if start < end and today in days and start <= minute < end:
            return True
        if start >= end:
            if today in days and minute >= start:
                return True
            if (today - 1) % 7 in days and minute < end:
                return True
    return False


def blockers(rules: Rules, state: MachineState) -> list[str]:
    """Why this machine may not work now (empty: it may)."""
    reasons = []
    if rules.schedule and not in_schedule(rules.schedule, state.now):
        reasons.append(f"outside the donation schedule ({rules.schedule})")
    if rules.pause_on_battery and state.on_battery:
        reasons.append("running on battery")
    if rules.idle_only and state.idle_seconds is not None and state.idle_seconds < rules.idle_minutes * 60:
        reasons.append(f"the computer is in use (idle for {state.idle_seconds / 60:.0f} of {rules.idle_minutes} min)")
    if rules.max_gpu_temperature is not None:
        hot = [t for t in state.gpu_temperatures if t > rules.max_gpu_temperature]
        if hot:
            reasons.append(f"GPU at {max(hot):.0f} °C, above the {rules.max_gpu_temperature} °C cap")
    return reasons


def read_state(gpus: list[dict[str, Any]], now: datetime | None = None) -> MachineState:
    """Read the platform now (cheap: no subprocess unless a tool is the only source)."""
    temperatures = tuple(float(g["temperature_c"]) for g in gpus if isinstance(g.get("temperature_c"), (int, float)))
    return MachineState(idle_seconds(), on_battery(), temperatures, now or datetime.now())


def on_battery() -> bool | None:
    """True on battery power, False on mains, None where psutil cannot tell (desktops, some VMs)."""
    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return None
    if battery is None or battery.power_plugged is None:
        return None
    return not battery.power_plugged


def idle_seconds() -> float | None:
    """Seconds since the last keyboard or mouse input; None where the platform cannot tell."""
    system = platform.system()
    if system == "Windows":
        return _idle_windows()
    if system == "Darwin":
        return _idle_macos()
    if _session_type() == "wayland":
        return _idle_mutter()
    return _idle_x11()


def _session_type() -> str:
    """The desktop session's kind from XDG_SESSION_TYPE ("x11", "wayland", "tty", or "" when unset)."""
    import os

    return os.environ.get("XDG_SESSION_TYPE", "").strip().lower()


def idle_support() -> str:
    """One line saying how idle time is read here, or why it cannot be."""
    system = platform.system()
    if system == "Windows":
        return "Windows GetLastInputInfo"
    if system == "Darwin":
        return "macOS IOHIDSystem HIDIdleTime"
    if _session_type() == "wayland":
        if _idle_mutter() is not None:
            return "GNOME Mutter IdleMonitor (Wayland)"
        return ("not available: this Wayland session offers no idle monitor AI Farm can read (GNOME's Mutter "
                "IdleMonitor over D-Bus is the one supported; XWayland sees only X11 windows' input), so "
                "idle-only donation treats the computer as idle")
    if _idle_x11() is not None:
        return "X11 screensaver extension"
    return ("not available: no X11 display with the XScreenSaver extension (Wayland sessions and headless "
            "machines cannot report input idle time), so idle-only donation treats the computer as idle")


MUTTER_IDLE_CALL = ["--session", "--dest", "org.gnome.Mutter.IdleMonitor",
                    "--object-path", "/org/gnome/Mutter/IdleMonitor/Core",
                    "--method", "org.gnome.Mutter.IdleMonitor.GetIdletime"]


def _idle_mutter() -> float | None:
    """Idle seconds from GNOME's Mutter IdleMonitor over the session D-Bus (`gdbus`), the Wayland way."""
    gdbus = shutil.which("gdbus")
    if gdbus is None:
        return None
    try:
        done = subprocess.run([gdbus, "call", *MUTTER_IDLE_CALL], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_mutter_idletime(done.stdout) if done.returncode == 0 else None


def parse_mutter_idletime(text: str) -> float | None:
    """Seconds from gdbus's reply to GetIdletime, `(uint64 12345,)` in milliseconds; None if it is not one."""
    match = re.fullmatch(r"\(\s*(?:uint64\s+)?(\d{1,20}),?\s*\)", text.strip())
    return int(match.group(1)) / 1000.0 if match else None


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("eventMask", ctypes.c_ulong)]


def _idle_x11() -> float | None:
    import os

    if not os.environ.get("DISPLAY"):
        return None
    xlib_name, xss_name = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
    if not xlib_name or not xss_name:
        return None
    try:
        xlib, xss = ctypes.cdll.LoadLibrary(xlib_name), ctypes.cdll.LoadLibrary(xss_name)
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        display = xlib.XOpenDisplay(None)
        if not display:
            return None
        try:
            xlib.XDefaultRootWindow.restype = ctypes.c_ulong
            xlib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
            root = xlib.XDefaultRootWindow(display)
            xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
            info = xss.XScreenSaverAllocInfo()
            xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XScreenSaverInfo)]
            if not xss.XScreenSaverQueryInfo(display, root, info):
                return None
            idle = float(info.contents.idle) / 1000.0
            xlib.XFree(info)
            return idle
        finally:
            xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
            xlib.XCloseDisplay(display)
    except OSError:
        return None


def _idle_windows() -> float | None:
    class LastInputInfo(ctypes.Structure):
        _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]

    try:
        info = LastInputInfo()
        info.cbSize = ctypes.sizeof(info)
        windll = ctypes.windll  # type: ignore[attr-defined]
        if not windll.user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        windll.kernel32.GetTickCount64.restype = ctypes.c_uint64
        return windows_idle_ms(windll.kernel32.GetTickCount64(), info.dwTime) / 1000.0
    except (AttributeError, OSError):
        return None


def windows_idle_ms(tick_count64: int, last_input_ticks: int) -> int:
    """Milliseconds since the last input: GetLastInputInfo's 32-bit tick is compared modulo 2**32 with the
    64-bit tick count, so the answer stays right after the 32-bit counter wraps (every 49.7 days)."""
    return (tick_count64 - last_input_ticks) & 0xFFFFFFFF


def _idle_macos() -> float | None:
    ioreg = shutil.which("ioreg")
    if ioreg is None:
        return None
    try:
        out = subprocess.run([ioreg, "-c", "IOHIDSystem"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'"HIDIdleTime"\s*=\s*(\d+)', out)
    return int(match.group(1)) / 1e9 if match else None
