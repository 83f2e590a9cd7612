"""A pacer: at most `rate` calls per second across every task (or thread) that shares it."""

from __future__ import annotations

import asyncio
import threading
import time


class RateLimiter:
    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; the seconds to wait until it comes."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        return slot - now

    async def acquire(self) -> None:
        if wait := self.reserve():
            await asyncio.sleep(wait)
