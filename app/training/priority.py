"""Training runs below the volunteer's own work: idle CPU priority (and idle I/O priority on Linux)."""

from __future__ import annotations

import logging
import sys

import psutil

log = logging.getLogger(__name__)

POSIX_NICE = 19


def lower_own_priority() -> str:
    """Lower this process to the lowest CPU priority, and I/O to idle where the OS has it; says what was set.

    Called by a worker before it imports torch, so every thread torch starts inherits the priority.
    """
    process = psutil.Process()
    done = []
    try:
        if sys.platform == "win32":
            process.nice(psutil.IDLE_PRIORITY_CLASS)
            done.append("IDLE_PRIORITY_CLASS")
        else:
            process.nice(POSIX_NICE)
            done.append(f"nice {POSIX_NICE}")
    except (psutil.Error, OSError) as exc:
        log.warning("could not lower the worker's CPU priority: %s", exc)
    if sys.platform.startswith("linux"):
        try:
            process.ionice(psutil.IOPRIO_CLASS_IDLE)
            done.append("I/O idle")
        except (psutil.Error, OSError) as exc:
            log.debug("could not set idle I/O priority: %s", exc)
    return ", ".join(done) or "unchanged"
