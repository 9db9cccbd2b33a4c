"""The tray icon: a pure menu and icon-state function of the agent's state, and a thin pystray adapter.

This is the only module that imports pystray, and only when a tray is wanted (importing it without a
display raises).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.services.donation import Donation

log = logging.getLogger(__name__)

STATES = ("idle", "training", "paused", "error", "no_database")
COLORS = {"idle": (46, 125, 79), "training": (40, 110, 200), "paused": (200, 150, 30), "error": (200, 50, 50),
          "no_database": (120, 120, 120)}
DEFAULT_ACTION = "open_dashboard"


@dataclass(frozen=True)
class MenuEntry:
    """One line of the tray menu: a label, the action it starts (None: a status line), enabled, separator."""

    text: str
    action: str | None = None
    enabled: bool = True
    separator: bool = False


def icon_state(state: dict[str, Any]) -> str:
    """The icon to show for an agent summary (agent.describe())."""
    if not state.get("database_ok", True):
        return "no_database"
    work = state.get("work") or {}
    last = work.get("last_outcome") or {}
    donation = state.get("donation") or {}
    if work.get("running"):
        return "training"
    if donation.get("paused"):
        return "paused"
    if last.get("outcome") in ("failed", "error") and not work.get("running"):
        return "error"
    return "idle"


def status_lines(state: dict[str, Any]) -> list[str]:
    """The read-only status lines at the top of the menu."""
    donation = state.get("donation") or {}
    work = state.get("work") or {}
    lines = [f"Farm {state.get('farm_name', '?')} · {state.get('peer_count', 0)} peer(s)"]
    running = work.get("running")
    if running:
        lines.append(f"Training {running.get('name')} (task {running.get('task_id')}): {running.get('progress', 0):.0f}%")
    elif work.get("joined"):
        lines.append(f"Waiting for the group of task {work['joined']['task_id']}")
    else:
        lines.append("No task right now")
    if not state.get("database_ok", True):
        lines.append("Database unreachable: retrying")
    lines.append(donation.get("summary", "donating").capitalize())
    for reason in donation.get("on_hold") or []:
        lines.append(f"On hold: {reason}")
    return lines


def build_menu(state: dict[str, Any]) -> list[MenuEntry]:
    """The whole menu for an agent summary; pure, so every state is unit-tested without pystray."""
    donation = state.get("donation") or {}
    paused = bool(donation.get("paused"))
    busy = bool((state.get("work") or {}).get("running") or (state.get("work") or {}).get("joined"))
    entries = [MenuEntry(line, None, enabled=False) for line in status_lines(state)]
    entries.append(MenuEntry("", separator=True))
    entries.append(MenuEntry("Open dashboard", "open_dashboard"))
    if paused or donation.get("finish_current"):
        entries.append(MenuEntry("Resume", "resume"))
    else:
        entries.append(MenuEntry("Pause", "pause"))
        entries.append(MenuEntry("Snooze for 1 hour", "snooze_hour"))
        entries.append(MenuEntry("Snooze until tomorrow", "snooze_tomorrow"))
        entries.append(MenuEntry("Finish current task, then pause", "finish_then_pause", enabled=busy))
    entries.append(MenuEntry("Settings", "settings"))
    entries.append(MenuEntry("", separator=True))
    entries.append(MenuEntry("Quit", "quit"))
    return entries


def seconds_until_tomorrow(now: datetime, hour: int = 8) -> float:
    """Seconds until the next day's `hour` o'clock (local time)."""
    tomorrow = (now + timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def draw_icon(state: str, size: int = 64) -> Any:
    """The icon image of a state (Pillow): a coloured disc with a glyph that differs by state."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    color = COLORS[state]
    draw.ellipse((2, 2, size - 3, size - 3), fill=color + (255,))
    white = (255, 255, 255, 255)
    third = size // 3
    if state == "paused":
        draw.rectangle((third, third, third + size // 9, size - third), fill=white)
        draw.rectangle((size - third - size // 9, third, size - third, size - third), fill=white)
    elif state == "training":
        draw.polygon([(third, third - 2), (third, size - third + 2), (size - third + 4, size // 2)], fill=white)
    elif state in ("error", "no_database"):
        draw.rectangle((size // 2 - 3, third - 4, size // 2 + 3, size // 2 + 6), fill=white)
        draw.rectangle((size // 2 - 3, size - third + 1, size // 2 + 3, size - third + 7), fill=white)
    else:
        draw.ellipse((third, third, size - third, size - third), outline=white, width=max(2, size // 16))
    return image


class AgentActions:
    """Menu actions, each handed to the agent's event loop (never run on the tray's thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, donation: Donation, login_url: Callable[[], str],
                 stop: Callable[[], None], open_url: Callable[[str], Any] = webbrowser.open) -> None:
        self.loop = loop
        self.donation = donation
        self.login_url = login_url
        self.stop = stop
        self.open_url = open_url

    def __call__(self, action: str) -> "concurrent.futures.Future[Any] | None":
        """Start an action; returns the future of its coroutine on the agent's loop."""
        donation = self.donation
        make: dict[str, Callable[[], Any]] = {
            "open_dashboard": lambda: self._open(""),
            "settings": lambda: self._open("settings"),
            "pause": lambda: donation.pause(),
            "resume": lambda: donation.resume(),
            "snooze_hour": lambda: donation.pause(seconds=3600),
            "snooze_tomorrow": lambda: donation.pause(seconds=seconds_until_tomorrow(datetime.now())),
            "finish_then_pause": lambda: donation.pause(finish_current=True),
            "quit": lambda: self._quit(),
        }
        if action not in make:
            raise ValueError(f"unknown tray action {action!r}")
        return asyncio.run_coroutine_threadsafe(make[action](), self.loop)

    async def _open(self, page: str) -> None:
        url = self.login_url()
        if page:
            url += f"&next=/{page}"
        await asyncio.to_thread(self.open_url, url)

    async def _quit(self) -> None:
        self.stop()


def adapted_icon_class(base: Any) -> type:
    """pystray's Icon class for this platform, made to keep Ctrl-C working and, on X11, to receive clicks.

    pystray's GTK and AppIndicator backends reset SIGINT to the default on start (Ctrl-C would kill the agent
    without its clean stop) and mark the icon ready right after, on the main thread, where the handler is put
    back. Its X11 backend gets the adaptations of app/tray_x11.py (docking, clicks, a clean stop).
    """
    handler = signal.getsignal(signal.SIGINT)

    def _mark_ready(self: Any) -> None:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)
        base._mark_ready(self)

    namespace: dict[str, Any] = {"_mark_ready": _mark_ready}
    if base.__module__ == "pystray._xorg":
        from app.tray_x11 import X11Icon

        return type("Icon", (X11Icon, base), namespace)
    return type("Icon", (base,), namespace)


class Tray:
    """The pystray icon, refreshed from the agent's state every couple of seconds."""

    def __init__(self, actions: AgentActions, describe: Callable[[], dict[str, Any]]) -> None:
        import pystray  # lazily: raises without a display

        self._pystray = pystray
        self.actions = actions
        self.describe = describe
        self.state = describe()
        self.shown = icon_state(self.state)
        icon_class = adapted_icon_class(pystray.Icon)
        self.icon = icon_class("aifarm", draw_icon(self.shown), "AI Farm", menu=pystray.Menu(self._items))
        self._stop = threading.Event()
        # pystray hands each icon change to its loop and waits for that loop's answer; one made while the loop
        # ends waits forever, or takes the answer the stop waits for: a refresh and the stop never overlap.
        self._refreshing = threading.Lock()

    def _items(self) -> Any:
        items = []
        for entry in build_menu(self.state):
            if entry.separator:
                items.append(self._pystray.Menu.SEPARATOR)
            elif entry.action is None:
                items.append(self._pystray.MenuItem(entry.text, None, enabled=False))
            else:
                # The default item is what a click on the icon does where no menu can open (the plain X11 icon).
                items.append(self._pystray.MenuItem(entry.text, self._callback(entry.action), enabled=entry.enabled,
                                                    default=entry.action == DEFAULT_ACTION))
        return items

    def _callback(self, action: str) -> Callable[..., None]:
        def run(icon: Any = None, item: Any = None) -> None:
            self.actions(action)

        return run

    def refresh(self) -> None:
        """Redraw the icon, title and menu from the agent's state."""
        self.state = self.describe()
        shown = icon_state(self.state)
        if shown != self.shown:
            self.icon.icon = draw_icon(shown)
            self.shown = shown
        self.icon.title = " · ".join(status_lines(self.state)[:2])
        try:
            self.icon.update_menu()
        except NotImplementedError:
            pass  # backends without live menus build it from _items when it opens

    def notify(self, message: str) -> None:
        """A desktop notification where the backend supports them."""
        if getattr(self.icon, "HAS_NOTIFICATION", False):
            try:
                self.icon.notify(message, "AI Farm")
            except Exception as exc:  # notifications are a courtesy; a backend that fails must not stop the agent
                log.debug("notification failed: %s", exc)

    def run(self) -> None:
        """Run the icon on this (main) thread until stop()."""

        def refresher(icon: Any) -> None:
            with self._refreshing:
                if self._stop.is_set():
                    return
                icon.visible = True
            while not self._stop.wait(2.0):
                with self._refreshing:
                    if self._stop.is_set():
                        break
                    try:
                        self.refresh()
                    except Exception as exc:  # a refresh that fails is retried next time
                        log.debug("tray refresh failed: %s", exc)

        try:
            self.icon.run(setup=refresher)
        except Exception as exc:
            if not self._stop.is_set():
                raise
            # pystray's GTK backends close their last notification on the way out, which fails without a
            # notification service on the session bus; the icon is gone either way.
            log.debug("tray cleanup failed: %s", exc)

    def stop(self) -> None:
        """Remove the icon."""
        self._stop.set()
        with self._refreshing:
            self.icon.stop()


def display_available() -> bool:
    """True where a tray can be shown (a desktop session)."""
    import os
    import platform

    if platform.system() in ("Windows", "Darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_with_tray(settings: Any, reload: Callable[[], Any]) -> int:
    """Run the agent's event loop on a thread and the tray on this (main) thread; Quit or a signal stops both."""
    import signal

    from app.agent import run_until_stopped

    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def on_started(agent: Any, stop: Callable[[], None]) -> None:
        box.update(agent=agent, stop=stop)
        started.set()

    def agent_thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["rc"] = loop.run_until_complete(run_until_stopped(
                settings, headless=False, reload=reload, on_started=on_started, install_signals=False))
        except BaseException as exc:  # handed to the main thread, which reports it like the CLI does
            box["error"] = exc
        finally:
            started.set()
            tray = box.get("tray")
            if tray is not None:
                tray.stop()

    thread = threading.Thread(target=agent_thread, name="agent", daemon=False)
    thread.start()
    started.wait()
    if "agent" not in box:
        thread.join()
        raise box["error"]

    def stop_agent(*_: Any) -> None:
        loop.call_soon_threadsafe(box["stop"])

    signal.signal(signal.SIGINT, stop_agent)
    signal.signal(signal.SIGTERM, stop_agent)
    try:
        agent = box["agent"]
        tray = Tray(AgentActions(loop, agent.donation, agent.login_url, lambda: box["stop"]()), agent.describe)
    except Exception as exc:  # pystray raises (not ImportError) without a usable display or backend
        log.warning("no tray icon (%s); running headless, stop with Ctrl-C", exc)
        thread.join()
    else:
        box["tray"] = tray
        box["agent"].notifier = tray.notify
        if thread.is_alive():
            tray.run()
        thread.join()
    if "error" in box:
        raise box["error"]
    return int(box.get("rc", 0))
