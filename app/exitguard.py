"""A bound on how long the process may linger after the agent has stopped.

A thread left behind (a database driver's connection thread whose connection was dropped while its task was
cancelled, an executor job stuck in a system call) keeps the interpreter alive after "agent stopped", so a service
manager or Ctrl-C would wait forever. Once armed, a daemon thread ends the process after a grace period, after
writing the stack of every thread still running to the log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)

EXIT_GRACE_SECONDS = 10.0


def lingering_threads() -> list[threading.Thread]:
    """The threads, other than the calling one, that keep the interpreter from exiting."""
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]


def thread_stacks(threads: list[threading.Thread]) -> str:
    """Each thread's name and its current stack, for the log."""
    frames = sys._current_frames()
    parts = []
    for thread in threads:
        frame = frames.get(thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no stack)\n"
        parts.append(f"thread {thread.name!r}:\n{stack}")
    return "".join(parts)


def exit_within(seconds: float, code: int) -> threading.Thread:
    """End the process with `code` if it is still running `seconds` from now."""

    def guard() -> None:
        time.sleep(seconds)
        lingering = [t for t in lingering_threads() if t is not threading.main_thread()]
        log.error("the process did not exit within %.0f s of stopping; ending it. Threads still running:\n%s",
                  seconds, thread_stacks(lingering or [threading.main_thread()]))
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(code)

    thread = threading.Thread(target=guard, name="exit-guard", daemon=True)
    thread.start()
    return thread
