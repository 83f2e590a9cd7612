"""The bus interface every backend implements: publish, consume as a group, commit, dead-letter.

Delivery is at-least-once: a consumer commits offsets only after the work for those records is
durably recorded (the ledger turns that into an exactly-once effect).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    timestamp: float = 0.0
    #: why the record breaks the bus contract (its value or headers), as read by the backend: the
    #: worker dead-letters it with this reason; `value` then holds what could be recovered as bytes
    problem: str | None = None


class Consumer(abc.ABC):
    """One member of a consumer group reading some topics."""

    @abc.abstractmethod
    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Records after the group's committed position (or after the last poll, until commit)."""

    @abc.abstractmethod
    def commit(self, records: Sequence[Record]) -> None:
        """Mark these records (and everything before them in their partition) as done for the group."""

    def rewind(self) -> None:  # noqa: B027 - optional: default is to re-read from the committed offsets
        """Forget uncommitted progress, so the next poll re-reads after the committed offsets."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus(abc.ABC):
    #: exceptions of the backend's library that mean "try again later"

    @abc.abstractmethod
    def publish(self, topic: str, value: bytes, key: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Durably append one record (returns once the bus has acknowledged it)."""

    def publish_many(self, topic: str, items: Sequence[tuple[str | None, bytes]]) -> None:
        for key, value in items:
            self.publish(topic, value, key=key)

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    @abc.abstractmethod
    def lag(self, group: str, topic: str) -> tuple[int, int]:
        """(records in the topic, records the group has committed) for `comms status`."""

    @abc.abstractmethod
    def topics(self) -> list[str]: ...

    def dead_letter(self, record: Record, reason: str, group: str) -> None:
        """Put the original bytes on <topic>.dlq with the reason, the group and where they came from."""
        self.publish(
            record.topic + DEAD_LETTER_SUFFIX,
            record.value,
            key=record.key,
            headers={
                "reason": reason[:1000],
                "consumer_group": group,
                "source_topic": record.topic,
                "source_partition": str(record.partition),
                "source_offset": str(record.offset),
            },
        )

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
