"""The embedded bus: one SQLite file in WAL mode, durable, shared by several processes.

- One partition per topic. Offsets come from one AUTOINCREMENT counter: SQLite serialises writers,
  so a reader never sees a higher offset before a lower one commits (no gaps to skip over later).
- synchronous=FULL: an acknowledged publish survives a power cut, not just a process crash.
- A consumer group is one reader at a time: a lease row, renewed on every poll and commit, lets a
  second process of the same group take over when the first dies (after `lease` seconds) instead
  of both reading the same records. Kafka does the same job with partition assignment.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from comms.bus.base import Bus, Consumer, Record
from comms.errors import BusUnavailableError
from comms.store import SqliteFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    offset  INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT NOT NULL,
    key     TEXT,
    value   BLOB NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    ts      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_topic ON records(topic, offset);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp  TEXT NOT NULL,
    topic TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic)
);
CREATE TABLE IF NOT EXISTS group_leases (
    grp     TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    expires REAL NOT NULL
);
"""


def sqlite_path(url: str) -> Path:
    """sqlite:///var/comms.db is relative to the working directory, sqlite:////abs/comms.db absolute."""
    rest = urlsplit(url).path
    return Path(rest[1:] if rest.startswith("/") else rest)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT on a guarded file: 'database is locked' is a retryable
    BusUnavailableError; a deleted, damaged or full file a StoreError naming it."""

    def __init__(self, file: SqliteFile, conn: sqlite3.Connection) -> None:
        self.file, self.conn = file, conn

    def __enter__(self) -> sqlite3.Connection:
        with self.file.errors("cannot write", busy=BusUnavailableError):
            self.file.check()
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        with self.file.errors("cannot write", busy=BusUnavailableError):
            if exc_type is None:
                self.conn.execute("COMMIT")
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")


def _record(topic: str, offset: int, key: object, value: object, headers: object, ts: object) -> Record:
    """A Record from a row as stored. Another producer may have written anything into the file:
    what breaks the contract (a value that is not bytes, headers that are not a JSON object of
    strings) is named in `problem`, and the worker dead-letters the record instead of crashing."""
    problems = []
    if not isinstance(value, bytes):
        problems.append(f"the record's value is SQLite {_sqlite_type(value)}, not bytes")
        value = b"" if value is None else (value if isinstance(value, str) else repr(value)).encode("utf-8", "replace")
    try:
        h = json.loads(headers) if isinstance(headers, str | bytes) else None
    except (ValueError, RecursionError):
        h = None
    if not isinstance(h, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in h.items()):
        problems.append("the record's headers are not a JSON object of strings")
        h = {}
    if key is not None and not isinstance(key, str):
        key = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    stamp = ts if isinstance(ts, float | int) else 0.0
    return Record(topic, 0, offset, key, value, h, float(stamp), "; ".join(problems) or None)


def _sqlite_type(value: object) -> str:
    return {type(None): "NULL", int: "INTEGER", float: "REAL", str: "TEXT"}.get(type(value), type(value).__name__)


class SqliteConsumer(Consumer):
    def __init__(self, bus: SqliteBus, group: str, topics: Sequence[str]) -> None:
        self.bus, self.group, self.topics = bus, group, list(topics)
        self.file = SqliteFile(bus.path, "bus")
        self.conn = self.file.open()
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._position: dict[str, int] = {}

    def _hold_lease(self) -> bool:
        now = time.time()
        with _Tx(self.file, self.conn) as c:
            c.execute(
                "INSERT INTO group_leases(grp, owner, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(grp) DO UPDATE SET owner=excluded.owner, expires=excluded.expires "
                "WHERE group_leases.owner = excluded.owner OR group_leases.expires < ?",
                (self.group, self.owner, now + self.bus.lease_seconds, now),
            )
            row = c.execute("SELECT owner FROM group_leases WHERE grp=?", (self.group,)).fetchone()
        held = row is not None and row[0] == self.owner
        if not held:
            self._position.clear()  # someone else owns the group: start again from committed offsets
        return held

    def _committed(self, topic: str) -> int:
        with self.file.errors("cannot read", busy=BusUnavailableError):
            row = self.conn.execute(
                "SELECT next_offset FROM group_offsets WHERE grp=? AND topic=?", (self.group, topic)
            ).fetchone()
        return row[0] if row else 0

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            if self._hold_lease():
                out: list[Record] = []
                for topic in self.topics:
                    pos = self._position.get(topic)
                    if pos is None:
                        pos = self._position[topic] = self._committed(topic)
                    with self.file.errors("cannot read", busy=BusUnavailableError):
                        rows = self.conn.execute(
                            "SELECT offset, key, value, headers, ts FROM records "
                            "WHERE topic=? AND offset>=? ORDER BY offset LIMIT ?",
                            (topic, pos, max_records - len(out)),
                        ).fetchall()
                    out.extend(_record(topic, *row) for row in rows)
                    if rows:
                        self._position[topic] = rows[-1][0] + 1
                    if len(out) >= max_records:
                        break
                if out:
                    return out
            if time.monotonic() >= deadline:
                return []
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def commit(self, records: Sequence[Record]) -> None:
        last: dict[str, int] = {}
        for r in records:
            last[r.topic] = max(last.get(r.topic, -1), r.offset)
        if not last:
            return
        with _Tx(self.file, self.conn) as c:
            row = c.execute("SELECT owner FROM group_leases WHERE grp=?", (self.group,)).fetchone()
            if row is None or row[0] != self.owner:
                # Our lease expired and another member took over: its commit wins; ours would rewind it.
                self._position.clear()
                return
            for topic, off in last.items():
                c.execute(
                    "INSERT INTO group_offsets(grp, topic, next_offset) VALUES (?, ?, ?) "
                    "ON CONFLICT(grp, topic) DO UPDATE SET next_offset=max(next_offset, excluded.next_offset)",
                    (self.group, topic, off + 1),
                )
            c.execute(
                "UPDATE group_leases SET expires=? WHERE grp=?", (time.time() + self.bus.lease_seconds, self.group)
            )

    def rewind(self) -> None:
        self._position.clear()

    def close(self) -> None:
        try:
            with contextlib.suppress(sqlite3.Error):  # a lease we cannot drop expires by itself
                self.conn.execute("DELETE FROM group_leases WHERE grp=? AND owner=?", (self.group, self.owner))
        finally:
            self.conn.close()


class SqliteBus(Bus):
    def __init__(self, path: str | Path, lease_seconds: float = 30.0) -> None:
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self.file = SqliteFile(self.path, "bus")
        self.conn = self.file.open()
        with self.file.errors("cannot set up its tables", busy=BusUnavailableError):
            self.conn.executescript(SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> SqliteBus:
        q = parse_qs(urlsplit(url).query)
        return cls(sqlite_path(url), lease_seconds=float(q.get("lease", ["30"])[0]))

    def publish(self, topic: str, value: bytes, key: str | None = None, headers: dict[str, str] | None = None) -> None:
        self._insert([(topic, key, value, headers or {})])

    def publish_many(self, topic: str, items: Sequence[tuple[str | None, bytes]]) -> None:
        self._insert([(topic, k, v, {}) for k, v in items])

    def _insert(self, rows: list[tuple[str, str | None, bytes, dict[str, str]]]) -> None:
        now = time.time()
        with self._lock, _Tx(self.file, self.conn) as c:
            c.executemany(
                "INSERT INTO records(topic, key, value, headers, ts) VALUES (?, ?, ?, ?, ?)",
                [(t, k, v, json.dumps(h), now) for t, k, v, h in rows],
            )

    def consumer(self, group: str, topics: Sequence[str]) -> SqliteConsumer:
        return SqliteConsumer(self, group, topics)

    def lag(self, group: str, topic: str) -> tuple[int, int]:
        with self._lock, self.file.errors("cannot read", busy=BusUnavailableError):
            nxt = self.conn.execute(
                "SELECT next_offset FROM group_offsets WHERE grp=? AND topic=?", (group, topic)
            ).fetchone()
            total, done = self.conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE offset < ?) FROM records WHERE topic=?",
                (nxt[0] if nxt else 0, topic),
            ).fetchone()
        return total, done

    def topics(self) -> list[str]:
        with self._lock, self.file.errors("cannot read", busy=BusUnavailableError):
            return [r[0] for r in self.conn.execute("SELECT DISTINCT topic FROM records ORDER BY topic")]

    def close(self) -> None:
        self.conn.close()
