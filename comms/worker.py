"""The consumer loop: poll, validate, handle, dead-letter what cannot be handled, commit.

Offsets are committed only after every record of the batch is either ledgered or dead-lettered, so a
crash anywhere means redelivery (at-least-once) and the ledger makes the effect exactly-once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from comms.bus import Bus, Consumer
from comms.errors import BusError, EventValidationError, RenderError, TransientDeliveryError
from comms.events import Event, parse_event

log = logging.getLogger("comms.worker")

# consumer name -> the campaign channel it serves (or None: attendance counting); each is one consumer group
CONSUMERS: dict[str, str | None] = {"press": "press_release", "sms": "sms", "email": "email", "attendance": None}


def group_name(consumer: str) -> str:
    return f"comms-{consumer}"


@dataclass
class Worker:
    name: str
    bus: Bus
    consumer: Consumer
    handle: Callable[[Event], Counter[str]]  # one valid event -> counts by outcome
    topic: str
    release: Callable[[], Counter[str]] | None = None  # deferred messages now due, if the consumer has any
    backoff: float = 0.0
    failures: int = 0  # transient failures in a row: the pause doubles with each, up to 30 s
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def group(self) -> str:
        return group_name(self.name)

    def step(self, max_records: int = 200, timeout: float = 0.2) -> int:
        """Release due deferred messages, then handle one batch; return how much work there was."""
        if self.backoff and time.monotonic() < self.backoff:
            return 0
        released = 0
        if self.release is not None:
            try:
                counts = self.release()
            except TransientDeliveryError as exc:
                self._pause(exc, "deferred messages")
                return 0
            self.stats.update(counts)
            released = counts["released"]
        records = self.consumer.poll(max_records=max_records, timeout=timeout)
        done = []
        for rec in records:
            try:
                event = parse_event(rec.value)
                self.stats.update(self.handle(event))
                self.stats["events"] += 1
            except (EventValidationError, RenderError) as exc:
                self.bus.dead_letter(rec, str(exc), self.group)
                self.stats["dead_lettered"] += 1
                log.warning("%s: %s@%s dead-lettered: %s", self.group, rec.topic, rec.offset, exc)
            except TransientDeliveryError as exc:
                # Keep what is done, re-read this record after a pause; the ledger skips what went out.
                self.consumer.commit(done)
                self.consumer.rewind()
                self._pause(exc, f"{rec.topic}@{rec.offset}")
                return len(done) + released
            done.append(rec)
        self.consumer.commit(done)
        self.failures = 0
        return len(records) + released

    def _pause(self, exc: TransientDeliveryError, what: str) -> None:
        self.failures += 1
        delay = exc.retry_after if exc.retry_after is not None else min(30.0, 0.25 * 2 ** (self.failures - 1))
        self.backoff = time.monotonic() + delay
        self.stats["retries"] += 1
        log.warning("%s: provider unavailable (%s); retrying %s in %.2fs", self.group, exc, what, delay)

    def caught_up(self) -> bool:
        """The group has committed every record of its topic (an empty poll alone can mean a Kafka
        consumer still joining its group)."""
        total, done = self.bus.lag(self.group, self.topic)
        return done >= total

    def close(self) -> None:
        self.consumer.close()


def run(workers: list[Worker], until_idle: bool = False, stop: threading.Event | None = None) -> None:
    """Drive the workers in turn until `stop` is set, or, with until_idle, until every group has
    committed everything on its topic."""
    while stop is None or not stop.is_set():
        busy = 0
        for w in workers:
            try:
                busy += w.step()
            except BusError as exc:
                log.error("%s: bus unavailable: %s; retrying in 2s", w.group, exc)
                w.consumer.rewind()
                w.backoff = time.monotonic() + 2.0
        if busy:
            continue
        waiting = any(w.backoff > time.monotonic() for w in workers)
        if until_idle and not waiting and all(w.caught_up() for w in workers):
            return
        time.sleep(0.05 if until_idle else 0.2)
