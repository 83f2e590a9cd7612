"""Pacers: at most `rate` calls per second across every task (or thread) that shares one
(RateLimiter), or across every process on every host that shares one budget (SharedRateLimiter)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float) -> None:
        self.rate = rate
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


class SharedRateLimiter(RateLimiter):
    """At most `rate` calls per second in all: tokens come from a budget that all processes share
    (`take(want) -> granted`, Ledger.take_budget), a tenth of a second's worth at a time, so one
    process's lanes take them from their own allowance between two trips to the database."""

    def __init__(self, rate: float, take: Callable[[int], int]) -> None:
        super().__init__(rate)
        self.take = take
        self.block = max(1, int(rate / 10))
        self._left = 0
        self._refill: asyncio.Lock | None = None

    async def acquire(self) -> None:
        if not self.interval:
            return
        if self._refill is None:
            self._refill = asyncio.Lock()  # on the loop that uses it
        while True:
            with self._lock:
                if self._left > 0:
                    self._left -= 1
                    return
            async with self._refill:
                with self._lock:
                    if self._left > 0:
                        continue
                granted = await asyncio.to_thread(self.take, self.block)
                with self._lock:
                    self._left += granted
                if not granted:
                    await asyncio.sleep(self.block / self.rate)
