"""Supervised background loops: a loop that raises is logged once per burst of failures and restarted with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError

from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

TRANSIENT = (OSError, DatabaseUnavailable, SQLAlchemyError, asyncio.TimeoutError)

LoopState = Literal["running", "restarting", "finished"]


@dataclass(frozen=True)
class Backoff:
    """Restart delays: first, doubled up to maximum; a run that lasted healthy_after seconds starts a new burst."""

    first: float = 1.0
    maximum: float = 30.0
    healthy_after: float = 60.0


@dataclass
class LoopStatus:
    """What a supervised loop is doing, for the status API."""

    name: str
    state: LoopState = "running"
    restarts: int = 0
    last_error: str | None = None


async def supervise(body: Callable[[], Awaitable[None]], status: LoopStatus, backoff: Backoff = Backoff(),
                    logger: logging.Logger = log) -> None:
    """Run body() until it returns or is cancelled; restart it after any exception, logging each burst once."""
    loop = asyncio.get_running_loop()
    delay = backoff.first
    burst_kind: str | None = None
    while True:
        status.state = "running"
        started = loop.time()
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background loop must outlive any one failure
            if loop.time() - started >= backoff.healthy_after:
                burst_kind, delay = None, backoff.first
            kind = type(exc).__name__
            status.restarts += 1
            status.last_error = f"{kind}: {exc}"[:300]
            status.state = "restarting"
            if kind == burst_kind:
                logger.debug("loop %s failed again (%s); restarting in %.0f s", status.name, status.last_error, delay)
            elif isinstance(exc, TRANSIENT):
                logger.warning("loop %s failed (%s); restarting with backoff", status.name, status.last_error)
            else:
                logger.error("loop %s failed; restarting with backoff", status.name, exc_info=exc)
            burst_kind = kind
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff.maximum)
        else:
            status.state = "finished"
            return
