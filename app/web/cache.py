"""A tiny time-to-live cache for farm-wide page data: many viewers, one database round per second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class TTLCache:
    """Keeps the last value of each key for `ttl` seconds; concurrent misses of one key share one computation."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, produce: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value of key, or a fresh one from produce() (errors are not cached)."""
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._values.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            value = await produce()
            self._values[key] = (time.monotonic(), value)
            return value
