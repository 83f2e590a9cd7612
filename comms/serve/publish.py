"""Group commit: many webhook requests' events written to the bus in one write, each request answered
only once its events are on the bus (nothing acknowledged is lost if the process dies right after).

A district fan-out's callbacks arrive by the thousand per second; one bus write per request would
be one fsync each. The requests that arrive while a write is under way go together in the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from comms.bus import Bus

Item = tuple[str | None, bytes]  # (key, raw event)


class GroupCommit:
    def __init__(self, bus: Bus, topic: str, max_batch: int = 2000) -> None:
        self.bus, self.topic, self.max_batch = bus, topic, max_batch
        self._pending: deque[tuple[list[Item], asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # bus writes, for /metrics: how well requests are grouped

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish(self, items: list[Item]) -> None:
        """Return once `items` are on the bus; raise what the bus raised otherwise."""
        if not items:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((items, done))
        self._wake.set()
        await done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch: list[tuple[list[Item], asyncio.Future[None]]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch):
                    items, done = self._pending.popleft()
                    batch.append((items, done))
                    size += len(items)
                try:
                    await asyncio.to_thread(self.bus.publish_many, self.topic, [i for items, _ in batch for i in items])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which answers 503
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    self.writes += 1
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
