"""Training runs below the volunteer's own work: idle CPU priority (and idle I/O priority on Linux).

On Linux with autogroup scheduling (`kernel.sched_autogroup_enabled`, the desktop default) the scheduler first
shares the CPU fairly between sessions and only then by nice value inside each, so a nice-19 worker in the
agent's session still took a third of a CPU from a program in the volunteer's desktop session. The worker
therefore starts a session of its own (stdin, not signals, ties it to the agent) and sets that session's
autogroup to nice 19 as well.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

POSIX_NICE = 19
AUTOGROUP = Path("/proc/self/autogroup")


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
        done += own_autogroup()
    return ", ".join(done) or "unchanged"


def own_autogroup(autogroup: Path = AUTOGROUP) -> list[str]:
    """Start a session of our own and put its autogroup at nice 19 (Linux with autogroup); says what was set."""
    done = []
    if os.getsid(0) != os.getpid():
        try:
            os.setsid()
            done.append("own session")
        except OSError as exc:
            log.debug("could not start a session of its own: %s", exc)
    # Empty for the default autogroup (a session that never left the one init started): nothing of ours to set.
    if autogroup.exists() and autogroup.read_text().strip():
        try:
            autogroup.write_text(f"{POSIX_NICE}\n")
            done.append(f"autogroup nice {POSIX_NICE}")
        except OSError as exc:
            log.debug("could not lower the autogroup's priority: %s", exc)
    return done
