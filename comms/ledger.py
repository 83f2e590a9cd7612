"""The delivery ledger: one row per (event, campaign, channel, recipient), so a redelivered event
never becomes a second message.

A consumer records each message here before it commits the event's offset; a redelivery finds the
row and skips what is already `sent` or `suppressed`. States:

    pending ──> sent
       │  └───> failed      (permanent: opted out at the provider, invalid address)
       └──────> suppressed  (no consent, no contact, no address: decided before sending)
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from comms.bus.sqlite import connect

STATES = ("pending", "sent", "failed", "suppressed")
FINAL = frozenset({"sent", "failed", "suppressed"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key         TEXT PRIMARY KEY,
    event_uid   TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    lang        TEXT NOT NULL,
    state       TEXT NOT NULL,
    provider_id TEXT,
    detail      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_campaign ON deliveries(campaign, channel, state);
"""


def delivery_key(event_uid: str, campaign: str, channel: str, recipient: str) -> str:
    return hashlib.sha256(f"{event_uid}\x1f{campaign}\x1f{channel}\x1f{recipient}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    event_uid: str
    event_type: str
    campaign: str
    channel: str
    recipient: str
    lang: str


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.conn = connect(self.path)
        self.conn.executescript(SCHEMA)

    def open(self, entries: Iterable[Entry]) -> dict[str, str]:
        """Insert the rows that are new as `pending`; return the current state of every key."""
        entries = list(entries)
        now = time.time()
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "INSERT OR IGNORE INTO deliveries(key, event_uid, event_type, campaign, channel, recipient,"
                    " lang, state, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    [
                        (e.key, e.event_uid, e.event_type, e.campaign, e.channel, e.recipient, e.lang, now, now)
                        for e in entries
                    ],
                )
                states: dict[str, str] = {}
                keys = [e.key for e in entries]
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    q = f"SELECT key, state FROM deliveries WHERE key IN ({','.join('?' * len(chunk))})"
                    states.update(self.conn.execute(q, chunk).fetchall())
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return states

    def mark(self, updates: Iterable[tuple[str, str, str | None, str | None]]) -> None:
        """(key, state, provider_id, detail) for each message, in one transaction."""
        now = time.time()
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "UPDATE deliveries SET state=?, provider_id=coalesce(?, provider_id), detail=?,"
                    " attempts=attempts+1, updated=? WHERE key=?",
                    [(state, pid, detail, now, key) for key, state, pid, detail in updates],
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def counts(self, campaign: str | None = None) -> list[tuple[str, str, str, str, int]]:
        """(campaign, channel, lang, state, count) rows."""
        q = "SELECT campaign, channel, lang, state, count(*) FROM deliveries"
        args: tuple[str, ...] = ()
        if campaign:
            q += " WHERE campaign=?"
            args = (campaign,)
        q += " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        with self._lock:
            return [tuple(r) for r in self.conn.execute(q, args)]

    def get(self, key: str) -> tuple[str, str | None, str | None] | None:
        with self._lock:
            row = self.conn.execute("SELECT state, provider_id, detail FROM deliveries WHERE key=?", (key,)).fetchone()
        return tuple(row) if row else None

    def close(self) -> None:
        self.conn.close()
