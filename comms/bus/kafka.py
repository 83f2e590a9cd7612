"""The Kafka bus on kafka-python: `kafka://host:9092[,host2:9092][?partitions=3&replication=1]`.

URL options: `partitions` and `replication` for the topics it creates (3, 1); `connect_timeout`,
seconds to reach a broker before BusUnavailableError (5); `session_timeout`, seconds after which a
silent group member's partitions move to the others (10); `max_poll_interval`, seconds a member may
go without polling, which is also how long a rebalance waits for members that do not rejoin (300).

- Producer with acks="all"; each record keyed (student:<id>, district) so one student's events keep
  their order within a partition.
- Consumers are Kafka consumer groups with auto-commit off: the worker commits a batch only after
  it is ledgered or dead-lettered, and always before its next poll. A rebalance happens inside
  poll(), when no batch is in hand, so a partition move neither loses nor repeats a done batch.
- Topics are created on first use with the configured partitions and replication.
- Security settings pass through from the environment: COMMS_KAFKA_SECURITY_PROTOCOL,
  COMMS_KAFKA_SASL_MECHANISM, COMMS_KAFKA_SASL_USERNAME, COMMS_KAFKA_SASL_PASSWORD, COMMS_KAFKA_SSL_CAFILE.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    CommitFailedError,
    InvalidSessionTimeoutError,
    KafkaError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata

from comms.bus.base import Bus, Consumer, Record
from comms.errors import BusUnavailableError, ConfigError

log = logging.getLogger("comms.bus.kafka")
# kafka-python's commit() and committed() block without limit by default: a broker that went away
# mid-batch would hang the consumer (and its SIGTERM) forever.
_CALL_TIMEOUT_MS = 15_000

_SECURITY_ENV = {
    "security_protocol": "COMMS_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "COMMS_KAFKA_SASL_MECHANISM",
    "sasl_plain_username": "COMMS_KAFKA_SASL_USERNAME",
    "sasl_plain_password": "COMMS_KAFKA_SASL_PASSWORD",
    "ssl_cafile": "COMMS_KAFKA_SSL_CAFILE",
}


def security_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    e = os.environ if environ is None else environ
    return {k: e[v] for k, v in _SECURITY_ENV.items() if e.get(v)}


class _LogRebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no type hints
    """Partition moves happen inside poll(), when the worker holds no uncommitted batch (it commits
    before polling again), so there is nothing to flush here: only to say what moved."""

    def __init__(self, group: str) -> None:
        self.group = group

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("%s: partitions revoked: %s", self.group, _tps(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("%s: partitions assigned: %s", self.group, _tps(assigned))


def _tps(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"


def _record(r: Any) -> Record:
    """A Record from a kafka-python ConsumerRecord. Any producer may write to the topic: a record
    without a value (a tombstone) or with a header that is not UTF-8 text breaks the contract, and
    is named in `problem` for the worker to dead-letter, never raised here."""
    problems = []
    value = r.value
    if not isinstance(value, bytes):
        problems.append("the record has no value (a tombstone)" if value is None else "the record's value is not bytes")
        value = b"" if value is None else str(value).encode("utf-8", "replace")
    headers: dict[str, str] = {}
    for k, v in r.headers or []:
        try:
            headers[k] = v.decode("utf-8") if v is not None else ""
            if v is None:
                problems.append(f"header {k!r} has no value")
        except UnicodeDecodeError:
            problems.append(f"header {k!r} is not UTF-8 text")
            headers[k] = v.decode("utf-8", "replace")
    key = r.key.decode("utf-8", "replace") if r.key is not None else None
    if "ce_specversion" in headers and not problems:
        value = _structured(headers, value, problems)
    return Record(r.topic, r.partition, r.offset, key, value, headers, r.timestamp / 1000, "; ".join(problems) or None)


def _structured(headers: dict[str, str], value: bytes, problems: list[str]) -> bytes:
    """A record in the CloudEvents Kafka binding's binary mode (the attributes in `ce_` headers, the
    data as the value: several official SDKs' default) as the structured JSON the contract reads."""
    try:
        data = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        problems.append("a binary-mode CloudEvent whose data is not JSON")
        return value
    doc: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
    doc["datacontenttype"] = headers.get("content-type", "application/json")
    doc["data"] = data
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


# A broker reply kafka-python could not decode (seen from noida-db with four members rebalancing at
# once: "unpack requires a buffer of 2 bytes"): the bus is unwell, like a lost connection; retry.
_UNREADABLE = (struct.error,)


class KafkaBusConsumer(Consumer):
    def __init__(self, bus: KafkaBus, group: str, topics: Sequence[str]) -> None:
        for t in topics:
            bus.ensure_topic(t)
        try:
            self.c = KafkaConsumer(
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **bus.client_kwargs,
                **bus.consumer_kwargs,
            )
            self.c.subscribe(list(topics), listener=_LogRebalance(group))
            self._rewind_pending = False
        except KafkaError as exc:
            raise BusUnavailableError(f"Kafka at {','.join(bus.servers)} is not reachable: {exc}; retry") from exc

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        try:
            if self._rewind_pending:
                self._seek_to_committed()
                self._rewind_pending = False
            batches = self.c.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except InvalidSessionTimeoutError as exc:  # retrying cannot help: the URL is wrong
            raise ConfigError(
                f"COMMS_BUS session_timeout {self.c.config['session_timeout_ms'] / 1000:g}s is outside the broker's "
                "group.min.session.timeout.ms..group.max.session.timeout.ms (Kafka's default minimum is 6s)"
            ) from exc
        except (KafkaError, *_UNREADABLE) as exc:
            raise BusUnavailableError(f"Kafka poll failed: {exc!r}") from exc
        return [_record(r) for recs in batches.values() for r in recs]

    def commit(self, records: Sequence[Record]) -> None:
        last: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            last[tp] = max(last.get(tp, -1), r.offset)
        if last:
            try:
                self.c.commit(
                    {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()}, timeout_ms=_CALL_TIMEOUT_MS
                )
            except CommitFailedError as exc:
                raise BusUnavailableError(
                    "commit refused during a rebalance: the batch will be redelivered and the ledger skips "
                    "what was already sent"
                ) from exc
            except (KafkaError, *_UNREADABLE) as exc:
                raise BusUnavailableError(f"Kafka commit failed: {exc!r}") from exc

    def rewind(self) -> None:
        # Only a flag: rewind() runs inside error handling and must not fail; the next poll() seeks.
        self._rewind_pending = True

    def _seek_to_committed(self) -> None:
        for tp in self.c.assignment():
            committed = self.c.committed(tp, timeout_ms=_CALL_TIMEOUT_MS)
            if committed is None:
                self.c.seek_to_beginning(tp)
            else:
                self.c.seek(tp, committed)

    def close(self) -> None:
        self.c.close(autocommit=False)


class KafkaBus(Bus):
    def __init__(
        self,
        servers: list[str],
        partitions: int = 3,
        replication: int = 1,
        security: dict[str, str] | None = None,
        connect_timeout: float = 5.0,
        session_timeout: float = 10.0,
        max_poll_interval: float = 300.0,
    ) -> None:
        self.servers = servers
        self.partitions, self.replication = partitions, replication
        self.client_kwargs: dict[str, Any] = {
            "bootstrap_servers": servers,
            "bootstrap_timeout_ms": int(connect_timeout * 1000),
            "reconnect_backoff_max_ms": 2000,
            **(security or {}),
        }
        self.consumer_kwargs: dict[str, Any] = {
            "session_timeout_ms": int(session_timeout * 1000),
            "heartbeat_interval_ms": int(session_timeout * 1000 / 3),
            # also the rebalance timeout: how long a rebalance waits for members that never rejoin
            "max_poll_interval_ms": int(max_poll_interval * 1000),
        }
        self._known: set[str] = set()
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._probe: KafkaConsumer | None = None

    @classmethod
    def from_url(cls, url: str) -> KafkaBus:
        u = urlsplit(url)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        servers = u.netloc.split(",")
        for hp in servers:
            host, _, port = hp.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"COMMS_BUS={url!r}: {hp!r} is not host:port (e.g. kafka://kafka:9092,kafka2:9092)")
        unknown = set(q) - {"partitions", "replication", "connect_timeout", "session_timeout", "max_poll_interval"}
        if unknown:
            raise ConfigError(f"COMMS_BUS={url!r}: unknown option(s) {', '.join(sorted(unknown))}")
        return cls(
            servers,
            int(q.get("partitions", 3)),
            int(q.get("replication", 1)),
            security_settings(),
            float(q.get("connect_timeout", 5)),
            float(q.get("session_timeout", 10)),
            float(q.get("max_poll_interval", 300)),
        )

    @property
    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            try:
                self._admin = KafkaAdminClient(**self.client_kwargs)
            except KafkaError as exc:
                raise BusUnavailableError(f"Kafka at {','.join(self.servers)} is not reachable; retry") from exc
        return self._admin

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            try:
                # linger 0: an acknowledged single publish waited out a 5 ms linger (167 ev/s -> 2,040 ev/s in
                # bench/bus.py); batches still form on their own while a send is in flight
                self._producer = KafkaProducer(acks="all", linger_ms=0, retries=5, **self.client_kwargs)
            except KafkaError as exc:
                raise BusUnavailableError(f"Kafka at {','.join(self.servers)} is not reachable; retry") from exc
        return self._producer

    def ensure_topic(self, topic: str) -> None:
        if topic in self._known:
            return
        if topic not in set(self.admin.list_topics()):
            # another process may create it first: that is what we wanted anyway
            with contextlib.suppress(TopicAlreadyExistsError):
                self.admin.create_topics([NewTopic(topic, self.partitions, self.replication)])
        self._known.add(topic)

    def publish(self, topic: str, value: bytes, key: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.ensure_topic(topic)
        fut = self.producer.send(
            topic,
            value,
            key=key.encode() if key else None,
            headers=[(k, v.encode()) for k, v in (headers or {}).items()],
        )
        try:
            fut.get(timeout=30)
        except KafkaError as exc:
            raise BusUnavailableError(f"Kafka did not acknowledge a record on {topic}: {exc}") from exc

    def publish_many(self, topic: str, items: Sequence[tuple[str | None, bytes]]) -> None:
        self.ensure_topic(topic)
        futs = [self.producer.send(topic, v, key=k.encode() if k else None) for k, v in items]
        self.producer.flush()
        try:
            for f in futs:
                f.get(timeout=30)
        except KafkaError as exc:
            raise BusUnavailableError(f"Kafka did not acknowledge every record on {topic}: {exc}") from exc

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaBusConsumer:
        return KafkaBusConsumer(self, group, topics)

    def lag(self, group: str, topic: str) -> tuple[int, int]:
        try:
            return self._lag(group, topic)
        except (KafkaError, *_UNREADABLE) as exc:
            raise BusUnavailableError(f"Kafka did not tell the lag of {group} on {topic}: {exc!r}") from exc

    def _lag(self, group: str, topic: str) -> tuple[int, int]:
        # `run --until-idle` asks this for every worker on every idle round: one client, not one per call
        if self._probe is None:
            self._probe = KafkaConsumer(**self.client_kwargs)
        probe = self._probe
        parts = probe.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = probe.end_offsets(tps) if tps else {}
        starts = probe.beginning_offsets(tps) if tps else {}
        committed = self.admin.list_group_offsets({group: None}).get(group, {}) if group != "-" else {}
        total = sum(ends[tp] - starts[tp] for tp in tps)
        done = sum(max(0, committed[tp].offset - starts[tp]) for tp in tps if tp in committed)
        return total, done

    def topics(self) -> list[str]:
        return sorted(t for t in self.admin.list_topics() if not t.startswith("__"))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
        if self._admin is not None:
            self._admin.close()
        if self._probe is not None:
            self._probe.close()
