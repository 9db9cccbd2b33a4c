"""Ctrl-C and SIGTERM (Ctrl-Break on Windows) stop the agent cleanly, on every OS."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None],
                         platform: str = sys.platform) -> Callable[[], None]:
    """Route the stop signals to `stop` on the loop; returns the function that puts the old handlers back.

    Windows' event loops have no `add_signal_handler`, so there a plain handler hands the call to the loop.
    """
    if platform != "win32":
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, stop)

        def remove() -> None:
            for sig in signals:
                loop.remove_signal_handler(sig)
        return remove
    wanted = [signal.SIGINT, signal.SIGTERM, *([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])]
    previous = {sig: signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop)) for sig in wanted}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return restore
