"""A minimal system tray host (XEMBED) for tests: owns _NET_SYSTEM_TRAY_S0 and embeds the icons that ask to dock.

Run as `python -m tests.tray.xembed_host DISPLAY LOG DROP_S`: it announces itself (MANAGER), then writes one JSON
line to LOG for each SYSTEM_TRAY_REQUEST_DOCK, {"t": monotonic seconds, "window": id, "action": ...}, where the
action is "dropped" for requests arriving within DROP_S seconds of the first one (a host still starting) and
"embedded" for the others, whose window it reparents into a 48x48 box of its own.
"""

from __future__ import annotations

import json
import sys
import time

from Xlib import X, display
from Xlib.protocol import event

REQUEST_DOCK = 0


def main(name: str, log_path: str, drop_s: float) -> None:
    """Serve as the screen's tray host until killed."""
    d = display.Display(name)
    screen = d.screen()
    root = screen.root
    selection = d.intern_atom("_NET_SYSTEM_TRAY_S0")
    opcode = d.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
    owner = root.create_window(-100, -100, 1, 1, 0, screen.root_depth)
    owner.set_selection_owner(selection, X.CurrentTime)
    manager = event.ClientMessage(window=root, client_type=d.intern_atom("MANAGER"),
                                  data=(32, [X.CurrentTime, selection, owner.id, 0, 0]))
    root.send_event(manager, event_mask=X.StructureNotifyMask)
    d.sync()
    first: float | None = None
    while True:
        message = d.next_event()
        if message.type != X.ClientMessage or message.client_type != opcode or message.data[1][1] != REQUEST_DOCK:
            continue
        now = time.monotonic()
        first = now if first is None else first
        window = message.data[1][2]
        action = "dropped" if now - first < drop_s else "embedded"
        if action == "embedded":
            box = root.create_window(0, 0, 48, 48, 0, screen.root_depth, background_pixel=screen.white_pixel)
            box.map()
            icon = d.create_resource_object("window", window)
            icon.reparent(box, 0, 0)
            icon.map()
            d.sync()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"t": now, "window": window, "action": action}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
