"""A minimal StatusNotifier host for tests: owns org.kde.StatusNotifierWatcher on the session bus and drives menus.

It runs as its own process (it needs GLib from PyGObject) and talks JSON lines: it prints
{"event": "registered", "bus": ..., "path": ...} when an item registers, and answers each command read
from standard input with one line:
  {"cmd": "item"}                 the item's StatusNotifierItem properties (title, status, menu path)
  {"cmd": "layout"}               the item's whole dbusmenu tree, flattened: [{"id", "label", "enabled", "type"}]
  {"cmd": "click", "id": N}       com.canonical.dbusmenu.Event(N, "clicked", ...)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402  (after gi.require_version)

WATCHER_XML = """
<node>
  <interface name="org.kde.StatusNotifierWatcher">
    <method name="RegisterStatusNotifierItem"><arg type="s" direction="in" name="service"/></method>
    <method name="RegisterStatusNotifierHost"><arg type="s" direction="in" name="service"/></method>
    <property name="RegisteredStatusNotifierItems" type="as" access="read"/>
    <property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
    <property name="ProtocolVersion" type="i" access="read"/>
    <signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
    <signal name="StatusNotifierItemUnregistered"><arg type="s"/></signal>
    <signal name="StatusNotifierHostRegistered"/>
  </interface>
</node>
"""
WATCHER_PATH = "/StatusNotifierWatcher"
TIMEOUT_MS = 10_000


class Host:
    """The watcher (and host) object plus the registered items."""

    def __init__(self, bus: Gio.DBusConnection, loop: GLib.MainLoop) -> None:
        self.bus = bus
        self.loop = loop
        self.items: list[tuple[str, str]] = []
        self.pending = b""

    def emit(self, payload: dict[str, Any]) -> None:
        """One JSON line on standard output."""
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    def on_call(self, conn: Gio.DBusConnection, sender: str, path: str, iface: str, method: str,
                params: GLib.Variant, invocation: Gio.DBusMethodInvocation) -> None:
        (service,) = params.unpack()
        if method == "RegisterStatusNotifierItem":
            # libappindicator registers its object path; other items register a bus name
            bus_name, item_path = (sender, service) if service.startswith("/") else (service, "/StatusNotifierItem")
            self.items.append((bus_name, item_path))
            invocation.return_value(None)
            conn.emit_signal(None, WATCHER_PATH, "org.kde.StatusNotifierWatcher", "StatusNotifierItemRegistered",
                             GLib.Variant("(s)", (f"{bus_name}{item_path}",)))
            self.emit({"event": "registered", "bus": bus_name, "path": item_path})
        else:
            invocation.return_value(None)

    def on_get(self, conn: Gio.DBusConnection, sender: str, path: str, iface: str, name: str) -> GLib.Variant:
        if name == "RegisteredStatusNotifierItems":
            return GLib.Variant("as", [f"{bus}{item}" for bus, item in self.items])
        if name == "IsStatusNotifierHostRegistered":
            return GLib.Variant("b", True)
        return GLib.Variant("i", 0)

    def call(self, bus_name: str, path: str, iface: str, method: str, params: GLib.Variant | None) -> Any:
        """A synchronous method call; returns the unpacked reply."""
        reply = self.bus.call_sync(bus_name, path, iface, method, params, None, Gio.DBusCallFlags.NONE, TIMEOUT_MS, None)
        return reply.unpack() if reply is not None else None

    def item_properties(self) -> dict[str, Any]:
        """The last registered item's StatusNotifierItem properties."""
        bus_name, path = self.items[-1]
        (props,) = self.call(bus_name, path, "org.freedesktop.DBus.Properties", "GetAll",
                             GLib.Variant("(s)", ("org.kde.StatusNotifierItem",)))
        return {key: value for key, value in props.items() if isinstance(value, (str, int, bool))}

    def layout(self) -> list[dict[str, Any]]:
        """The last registered item's menu, flattened in order."""
        bus_name, _ = self.items[-1]
        menu_path = self.item_properties()["Menu"]
        _revision, root = self.call(bus_name, menu_path, "com.canonical.dbusmenu", "GetLayout",
                                    GLib.Variant("(iias)", (0, -1, [])))
        flat: list[dict[str, Any]] = []

        def walk(node: Any) -> None:
            node_id, props, children = node
            if node_id != 0:
                flat.append({"id": node_id, "label": props.get("label", ""), "enabled": props.get("enabled", True),
                             "visible": props.get("visible", True), "type": props.get("type", "standard")})
            for child in children:
                walk(child)

        walk(root)
        return flat

    def click(self, item_id: int) -> None:
        """Activate a menu item as a host does when the user clicks it."""
        bus_name, _ = self.items[-1]
        menu_path = self.item_properties()["Menu"]
        self.call(bus_name, menu_path, "com.canonical.dbusmenu", "Event",
                  GLib.Variant("(isvu)", (item_id, "clicked", GLib.Variant("i", 0), int(time.time()))))

    def on_input(self, channel: GLib.IOChannel, condition: GLib.IOCondition) -> bool:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            self.loop.quit()
            return False
        self.pending += chunk
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            self.answer(json.loads(line))
        return True

    def answer(self, request: dict[str, Any]) -> None:
        """Run one command and print its reply."""
        try:
            if not self.items:
                raise LookupError("no item registered")
            if request["cmd"] == "item":
                self.emit({"ok": self.item_properties()})
            elif request["cmd"] == "layout":
                self.emit({"ok": self.layout()})
            elif request["cmd"] == "click":
                self.click(int(request["id"]))
                self.emit({"ok": True})
            else:
                raise ValueError(f"unknown command {request['cmd']!r}")
        except (GLib.Error, LookupError, ValueError, KeyError) as exc:
            self.emit({"error": str(exc)})


def main() -> None:
    """Own the watcher name, then serve until standard input closes."""
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    host = Host(bus, GLib.MainLoop())
    info = Gio.DBusNodeInfo.new_for_xml(WATCHER_XML).interfaces[0]
    bus.register_object(WATCHER_PATH, info, host.on_call, host.on_get, None)
    reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
                          GLib.Variant("(su)", ("org.kde.StatusNotifierWatcher", 4)), None, Gio.DBusCallFlags.NONE,
                          TIMEOUT_MS, None)
    if reply.unpack()[0] != 1:
        raise SystemExit("org.kde.StatusNotifierWatcher is already owned on this bus")
    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP,
                      host.on_input)
    host.emit({"event": "ready"})
    host.loop.run()

if __name__ == "__main__":
    main()
