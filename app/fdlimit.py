"""The process's open-files limit: raised to the hard limit at start, so that connections do not run out of descriptors."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

UNKNOWN_LIMIT = 512  # Windows: no RLIMIT_NOFILE; the C runtime's default stream limit
DARWIN_OPEN_MAX = 10240  # macOS refuses a soft limit above OPEN_MAX even when the hard limit is unlimited


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where the system allows; returns the soft limit in force."""
    try:
        import resource
    except ImportError:
        return UNKNOWN_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (hard, min(hard, DARWIN_OPEN_MAX) if hard != resource.RLIM_INFINITY else DARWIN_OPEN_MAX):
        if target == resource.RLIM_INFINITY or target <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.debug("open-files limit not raised to %s: %s", target, exc)
            continue
        log.debug("open-files limit raised from %s to %s", soft, target)
        return target
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
