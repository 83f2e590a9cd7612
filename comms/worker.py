"""The consumer loop: poll, validate, handle, dead-letter what cannot be handled, commit.

Offsets are committed only after every record of the batch is either ledgered or dead-lettered, so a
crash anywhere means redelivery (at-least-once) and the ledger makes the effect exactly-once.

One record never stops a consumer: whatever it makes the handler raise, short of the bus, a stored
file or the configuration failing (BusError, StoreError, ConfigError: the run stops or waits, since
no other record would fare better), it is dead-lettered with the reason and the next one is handled.
Otherwise it would crash the consumer again on every restart, and every later event would wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comms.bus import Bus, Consumer, Record
from comms.errors import (
    BusError,
    ConfigError,
    EventValidationError,
    RenderError,
    StoreError,
    TransientDeliveryError,
)
from comms.events import Event, parse_event

log = logging.getLogger("comms.worker")

ATTENDANCE = "attendance"  # the consumer that counts absences and announces tiers
FEEDBACK = "feedback"  # the consumer that applies the providers' reports (on the feedback topic)


def consumer_names() -> list[str]:
    """Every consumer, one consumer group each: one per channel (its class names it), attendance and
    feedback."""
    from comms.channels import channel_classes

    return [*(c.consumer for c in channel_classes()), ATTENDANCE, FEEDBACK]


def group_name(consumer: str) -> str:
    return f"comms-{consumer}"


@dataclass
class Worker:
    name: str
    bus: Bus
    consumer: Consumer
    handle: Callable[[Event, Record], Counter[str]]  # one valid event (and its record) -> counts by outcome
    topic: str
    release: Callable[[], Counter[str]] | None = None  # deferred messages now due, if the consumer has any
    # a whole batch at once, for consumers whose work is one write per batch (the feedback reports)
    # or that decide over the batch (the attendance counter: the highest tier a student crossed)
    handle_many: Callable[[list[Event]], Counter[str]] | None = None
    # with handle_many: each record's own checks (EventValidationError), so one bad record is
    # dead-lettered with its reason before the batch is applied
    check: Callable[[Event], None] | None = None
    max_records: int = 200  # records a step takes: 1 where one record is much work (a shard)
    backoff: float = 0.0
    failures: int = 0  # transient failures in a row: the pause doubles with each, up to 30 s
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def group(self) -> str:
        return group_name(self.name)

    def step(self, timeout: float = 0.2) -> int:
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
        # with released messages in hand there may be more: no waiting on an empty topic meanwhile
        records = self.consumer.poll(max_records=self.max_records, timeout=0.0 if released else timeout)
        if self.handle_many is not None:
            return self._step_many(records)
        done: list[Record] = []
        for rec in records:
            try:
                if rec.problem:
                    raise EventValidationError(rec.problem)
                event = parse_event(rec.value)
                self.stats.update(self.handle(event, rec))
                self.stats["events"] += 1
            except (EventValidationError, RenderError) as exc:
                self._dead_letter(rec, str(exc))
            except (BusError, StoreError, ConfigError):
                raise
            except TransientDeliveryError as exc:
                # Keep what is done, re-read this record after a pause; the ledger skips what went out.
                self.consumer.commit(done)
                self.consumer.rewind()
                self._pause(exc, f"{rec.topic}@{rec.offset}")
                return len(done) + released
            except Exception as exc:  # a defect this record runs into: keep it, with the reason, and go on
                self._dead_letter(rec, f"could not be handled ({exc.__class__.__name__}: {exc})", error=True)
            done.append(rec)
        self.consumer.commit(done)
        self.failures = 0
        return len(records) + released

    def _step_many(self, records: list[Record]) -> int:
        """Validate each record (dead-lettering the bad ones), apply the rest in one call, commit."""
        assert self.handle_many is not None
        valid: list[tuple[Record, Event]] = []
        for rec in records:
            try:
                if rec.problem:
                    raise EventValidationError(rec.problem)
                event = parse_event(rec.value)
                if self.check is not None:
                    self.check(event)
                valid.append((rec, event))
            except EventValidationError as exc:
                self._dead_letter(rec, str(exc))
        try:
            self.stats.update(self.handle_many([e for _, e in valid]))
        except (BusError, StoreError, ConfigError):
            raise
        except Exception:  # noqa: BLE001 - one record runs into a defect: find it, keep the others
            for rec, event in valid:
                try:
                    self.stats.update(self.handle_many([event]))
                except (BusError, StoreError, ConfigError):
                    raise
                except EventValidationError as exc:  # found only against what is stored (a conflicting id)
                    self._dead_letter(rec, str(exc))
                except Exception as exc:  # noqa: BLE001 - dead-lettered with the reason, not swallowed
                    self._dead_letter(rec, f"could not be handled ({exc.__class__.__name__}: {exc})", error=True)
        self.stats["events"] += len(valid)
        self.consumer.commit(records)
        self.failures = 0
        return len(records)

    def _dead_letter(self, rec: Record, reason: str, error: bool = False) -> None:
        self.bus.dead_letter(rec, reason, self.group)
        self.stats["dead_lettered"] += 1
        log.log(
            logging.ERROR if error else logging.WARNING,
            "%s: %s@%s dead-lettered: %s",
            self.group,
            rec.topic,
            rec.offset,
            reason,
        )

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
    flowing = False
    while stop is None or not stop.is_set():
        busy = 0
        for w in workers:
            try:
                # while records flow (one worker's output is the next one's input, or one is catching
                # up), an idle worker does not wait on its topic: the others would wait with it
                busy += w.step(timeout=0.0 if flowing or busy else 0.2)
            except BusError as exc:
                log.error("%s: bus unavailable: %s; retrying in 2s", w.group, exc)
                w.consumer.rewind()
                w.backoff = time.monotonic() + 2.0
        flowing = bool(busy)
        if busy:
            continue
        waiting = any(w.backoff > time.monotonic() for w in workers)
        if until_idle and not waiting and _all_caught_up(workers):
            return
        time.sleep(0.05 if until_idle else 0.2)


def _all_caught_up(workers: list[Worker]) -> bool:
    try:
        return all(w.caught_up() for w in workers)
    except BusError as exc:  # not known: not idle, and asked again at the next idle round
        log.warning("cannot tell whether every group is done: %s", exc)
        return False


def close_all(*closables: Worker | Any) -> None:
    """Close what a run opened. After a StoreError a close may fail on the same file; that error has
    been reported already, so a second one is logged here, not raised over it."""
    for closable in closables:
        try:
            closable.close()
        except Exception as exc:  # noqa: BLE001 - logged, not swallowed
            log.debug("closing after a failure: %s", exc)
