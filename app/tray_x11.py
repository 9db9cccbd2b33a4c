"""The plain X11 tray icon (pystray's xorg backend), made to dock reliably, to receive clicks and to stop cleanly.

pystray asks the tray host to dock its window on every show and every icon change, which at start means two
SYSTEM_TRAY_REQUEST_DOCK messages a millisecond apart; a host still embedding the window after the first (trayer,
on a loaded machine) can end with it back on the root window, and pystray never asks again. It also never docks
into a tray host that starts after the icon, or that replaces the one that embedded it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from Xlib import X

log = logging.getLogger(__name__)

DOCK_RETRY_S = 3.0  # how long a dock request may go unanswered before it is sent again
DOCK_RETRY_MAX_S = 30.0  # the longest wait between requests to a host that keeps ignoring them


class X11Icon:
    """Mixin over pystray._xorg.Icon: one dock request at a time, sent again until the icon is embedded."""

    _display: Any
    _window: Any
    _systray_manager: Any
    _message_handlers: dict[int, Any]
    _net_system_tray_sx: int
    _thread: threading.Thread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dock_wanted = False
        self._docked = False
        self._dock_pending = False
        self._dock_attempts = 0
        self._dock_check = 0  # the number of the one dock check that counts; older ones are ignored
        self._dock_timer: threading.Timer | None = None
        self._closing = threading.Lock()
        self._closed = False
        display = self._display
        self._manager_atom = display.intern_atom("MANAGER")
        self._dock_check_atom = display.intern_atom("_AIFARM_DOCK_CHECK")
        # A tray host that starts announces itself with a MANAGER message to the root window's StructureNotify.
        display.screen().root.change_attributes(event_mask=X.StructureNotifyMask)
        display.flush()
        pystray_messages = self._message_handlers[X.ClientMessage]

        def on_client_message(event: Any) -> None:
            if event.client_type == self._dock_check_atom and event.window.id == self._window.id:
                self._on_dock_check(event.data[1][1])
            elif event.client_type == self._manager_atom and event.data[1][1] == self._net_system_tray_sx:
                self._on_tray_host(event.data[1][2])
            else:
                pystray_messages(event)

        self._message_handlers[X.ClientMessage] = on_client_message
        self._message_handlers[X.ReparentNotify] = self._on_reparent

    def _create_window(self) -> Any:
        window = super()._create_window()  # type: ignore[misc]
        # pystray acts on a button press but never selects button presses on its window
        window.change_attributes(event_mask=X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask)
        self._display.flush()
        return window

    def _run(self) -> None:
        # pystray records its loop thread only after waking the setup thread, which may already be showing the icon
        self._thread = threading.current_thread()
        super()._run()  # type: ignore[misc]

    def _assert_docked(self) -> None:
        """Ask the tray host to dock the icon unless it is docked or already asked (pystray's asks every time)."""
        self._dock_wanted = True
        if not self._docked and not self._dock_pending:
            self._request_dock()

    def _hide(self) -> None:
        self._dock_wanted = False
        self._forget_dock()
        super()._hide()  # type: ignore[misc]

    def _stop(self) -> None:
        with self._closing:
            self._closed = True
            self._forget_dock()
            self._window.destroy()
            # A round trip, not a flush: a flush returns at once while another thread (the one asking to stop) is
            # still sending, leaving the destroy unsent and the icon's loop waiting for its DestroyNotify forever.
            self._display.sync()

    def _request_dock(self) -> None:
        """Send one dock request to the tray host, if there is one, and check later that it embedded the icon."""
        self._forget_dock()
        self._systray_manager = None
        self._dock_window()  # type: ignore[attr-defined]  # pystray's: finds the host, asks, watches its end
        if self._systray_manager is None:
            log.debug("no system tray yet: the icon docks when one starts")
            return
        self._dock_pending = True
        self._dock_attempts += 1
        self._schedule_dock_check(min(DOCK_RETRY_S * 2 ** (self._dock_attempts - 1), DOCK_RETRY_MAX_S))

    def _forget_dock(self) -> None:
        """Drop the request in flight and its check."""
        self._dock_pending = False
        self._dock_check += 1
        if self._dock_timer is not None:
            self._dock_timer.cancel()
            self._dock_timer = None

    def _schedule_dock_check(self, delay: float) -> None:
        check = self._dock_check

        def post() -> None:
            with self._closing:
                if not self._closed:
                    self._send_message(self._window, self._dock_check_atom, check)  # type: ignore[attr-defined]
                    self._display.flush()

        self._dock_timer = threading.Timer(delay, post)
        self._dock_timer.daemon = True
        self._dock_timer.start()

    def _on_dock_check(self, check: int) -> None:
        if check != self._dock_check or not self._dock_wanted or self._docked:
            return
        log.debug("the system tray has not embedded the icon: asking again")
        self._request_dock()

    def _on_reparent(self, event: Any) -> None:
        if event.window.id != self._window.id:
            return
        self._docked = event.parent.id != self._display.screen().root.id
        if self._docked:
            self._forget_dock()
            self._dock_attempts = 0
        elif self._dock_wanted:
            # dropped by the host (it also happens when a second request reaches it mid-embedding): ask again soon
            self._forget_dock()
            self._dock_pending = True
            self._schedule_dock_check(DOCK_RETRY_S)

    def _on_tray_host(self, owner: int) -> None:
        """A tray host took the selection: dock into it unless it is the one already asked."""
        if not self._dock_wanted or (self._systray_manager is not None and self._systray_manager.id == owner):
            return
        self._docked = False
        self._dock_attempts = 0
        self._request_dock()

    def _on_destroy_notify(self, event: Any) -> None:
        manager = self._systray_manager
        if manager is None or event.window.id != manager.id:
            return
        self._systray_manager = None
        self._docked = False
        self._dock_attempts = 0
        if self._dock_wanted:
            self._request_dock()
