"""The delivery ledger: one row per (event, campaign, channel, recipient), so a redelivered event
never becomes a second message, plus the suppression list (opt-outs, bounces).

A consumer records each message here before it commits the event's offset. States (`State`; the
moves allowed are `TRANSITIONS`, and the ledger refuses any other with IllegalTransition):

    new ──> pending ──> sending ──> sent ──> delivered ──> spam_report / bounced
       │       │           │          ├──> undelivered    the carrier's answer (Twilio ErrorCode in detail)
       │       │           │          ├──> bounced, dropped, spam_report   SendGrid's events
       │       │           ├──────> failed      permanent: opted out at the provider, invalid address
       │       │           ├──────> pending     transient: retried (429, 5xx, timeout)
       │       │           └──────> deferred    transient while releasing, or quiet hours after a crash
       │       ├──> deferred ──> sending        quiet hours: released at `not_before`
       │       ├──> suppressed                  no consent, no contact, opted out, no address, daily cap
       │       └──> failed                      refused before sending (an SMS too long)
       ├──> (any state pending may move to)
       └──> awaiting_approval ──> (as pending)  the campaign's approvers said yes (comms/approvals.py)
                    └──────────> cancelled      they said no: never sent, whatever happens later

    new, pending, deferred, awaiting_approval ──> expired   its news was past before it could go
                                                            (EventData.expires: a backlog, an outage)
    new ──> held_out      the student is in the campaign's control group (`holdout`): never sent
    new, pending, deferred, awaiting_approval ──> superseded   a later event about the same student
                                                            says more (a higher tier): never sent
    deferred ──> deferred   held by the daily cap again the next day (Message.capped says since when)

`new` is never stored: `open()` only reads, a message not in the ledger yet comes back as `new`, and
the first state written for it inserts its row, one row write instead of two.

The states after `sent` come from the providers' callbacks (comms/feedback.py), which arrive late,
twice or out of order: a write to a state the row has already moved past (a late `sent` after
`delivered`, the same `delivered` twice) changes nothing and is no error. A `sending` row may move
straight on, since a callback can beat the pipeline's own `sent`.

A row left in `sending` by a crash is reconciled with the provider before any resend. A row's payload
(the message, for a crash or a deferred send) refers to its rendered text in `contents`, where a text
shared by 300,000 families is stored once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from comms.channels import REGISTRY, channel_class, channel_classes
from comms.channels.base import Message
from comms.clock import Clock, system_clock
from comms.db import Tx, open_db
from comms.errors import ConfigError, IllegalTransition


class State(StrEnum):
    NEW = "new"  # not in the ledger yet: never stored
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    SPAM_REPORT = "spam_report"
    AWAITING_APPROVAL = "awaiting_approval"  # rendered and held until the campaign's approvers decide
    CANCELLED = "cancelled"  # rejected by an approver: never sent
    EXPIRED = "expired"  # its news was past (EventData.expires) before it could go: never sent
    HELD_OUT = "held_out"  # the student is in the campaign's randomized control group: never sent
    SUPERSEDED = "superseded"  # a later event about the same student (a higher tier) replaced it: never sent


_S = State
#: what the providers report about a message they accepted
REPORTED = frozenset({_S.DELIVERED, _S.UNDELIVERED, _S.BOUNCED, _S.DROPPED, _S.SPAM_REPORT})
#: state -> the states a message in it may move to; written once, enforced by every write
TRANSITIONS: dict[State, frozenset[State]] = {
    _S.NEW: frozenset(
        {
            _S.PENDING,
            _S.SENDING,
            _S.DEFERRED,
            _S.SUPPRESSED,
            _S.FAILED,
            _S.AWAITING_APPROVAL,
            _S.CANCELLED,
            _S.EXPIRED,
            _S.HELD_OUT,
            _S.SUPERSEDED,
        }
    ),
    _S.AWAITING_APPROVAL: frozenset(
        {_S.SENDING, _S.DEFERRED, _S.SUPPRESSED, _S.FAILED, _S.CANCELLED, _S.EXPIRED, _S.SUPERSEDED}
    ),
    _S.PENDING: frozenset({_S.SENDING, _S.DEFERRED, _S.SUPPRESSED, _S.FAILED, _S.EXPIRED, _S.SUPERSEDED}),
    # SENDING -> SENDING: a crash's message that the provider does not have is sent again;
    # SENDING -> REPORTED: the provider's callback came before the pipeline wrote `sent`
    _S.SENDING: frozenset({_S.SENT, _S.FAILED, _S.PENDING, _S.DEFERRED, _S.SUPPRESSED, _S.SENDING, *REPORTED}),
    _S.DEFERRED: frozenset({_S.SENDING, _S.SUPPRESSED, _S.EXPIRED, _S.SUPERSEDED, _S.DEFERRED}),
    _S.SENT: REPORTED,
    _S.DELIVERED: frozenset({_S.BOUNCED, _S.SPAM_REPORT}),  # an e-mail reported after its delivery
    _S.FAILED: frozenset(),
    _S.SUPPRESSED: frozenset(),
    _S.UNDELIVERED: frozenset(),
    _S.BOUNCED: frozenset(),
    _S.DROPPED: frozenset(),
    _S.SPAM_REPORT: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.HELD_OUT: frozenset(),
    _S.SUPERSEDED: frozenset(),
}
#: the pipeline is done with a message in these: a redelivered event skips it
FINAL = frozenset(State) - {_S.NEW, _S.PENDING, _S.SENDING, _S.DEFERRED, _S.AWAITING_APPROVAL}
#: states in which a message went to the provider (the daily cap counts them)
WENT_OUT = frozenset({_S.SENDING, _S.SENT, *REPORTED})
#: state -> the stored states a message may be in to move to it
_FROM: dict[State, tuple[str, ...]] = {
    to: tuple(sorted(s.value for s, after in TRANSITIONS.items() if to in after and s is not _S.NEW)) for to in State
}


def _reachable(start: State) -> frozenset[State]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


#: for `sent` and what providers report: the stored states already past it, where a write to it has
#: nothing to do (a state is past itself: the same callback twice changes nothing)
_PAST: dict[State, tuple[str, ...]] = {
    to: tuple(sorted(s.value for s in _reachable(to) if s not in _FROM[to])) if to in REPORTED | {_S.SENT} else ()
    for to in State
}


def _sql_in(states: Sequence[str]) -> str:
    """The states as an SQL IN list; none is NULL (matches nothing: PostgreSQL refuses `IN ()`)."""
    return ", ".join(f"'{s}'" for s in states) or "NULL"


class Mark(NamedTuple):
    """A state change of one message."""

    key: str
    state: State
    provider_id: str | None = None
    detail: str | None = None


class CountRow(NamedTuple):
    campaign: str
    channel: str
    lang: str
    state: str
    messages: int


class DetailRow(NamedTuple):
    channel: str
    state: str
    detail: str
    messages: int


SCHEMA_VERSION = 8
# 2 -> 3: `contents` (version 2 payloads, content inline, still read) and indexes that a state
# change does not move (bench/README.md: ledger writes 26,000 -> 39,000+ rows/s)
# 3 -> 4: `events` (each event's digest, to tell a retry from a conflicting one under the same id);
# suppression addresses rewritten in the form lookups use (E.164, lower-case e-mail)
MIGRATIONS = {
    2: "DROP INDEX IF EXISTS deliveries_by_campaign; DROP INDEX IF EXISTS deliveries_deferred",
    3: "",
    4: "",  # 4 -> 5: `replies`, created by SCHEMA
    # 5 -> 6: `tallies` kept by triggers (counted once from the rows here), the event index, and the
    # approvals, audit and draft tables (created by SCHEMA)
    5: "DROP INDEX IF EXISTS deliveries_campaign;"
    "CREATE TABLE IF NOT EXISTS tallies (event_uid TEXT NOT NULL, campaign TEXT NOT NULL, channel TEXT NOT NULL,"
    " lang TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,"
    " PRIMARY KEY (event_uid, campaign, channel, lang, state)) WITHOUT ROWID;"
    "INSERT INTO tallies SELECT event_uid, campaign, channel, lang, state, count(*) FROM deliveries"
    " GROUP BY 1, 2, 3, 4, 5",
    # 6 -> 7: `claim`, the transaction that last moved a row to `sending` (many delivery processes)
    6: "ALTER TABLE deliveries ADD COLUMN claim TEXT",
    # 7 -> 8: the hold-out's tier and day of each student's first message (or the day it would have
    # gone), which `comms effect` measures from; a version 7 ledger made before the hold-out has no table
    # (copied into a new table: the same statements whether the old one has them or not)
    7: "CREATE TABLE IF NOT EXISTS holdout (campaign TEXT NOT NULL, student TEXT NOT NULL, arm TEXT NOT NULL,"
    " decided REAL NOT NULL, PRIMARY KEY (campaign, student));"
    "CREATE TABLE holdout_v8 (campaign TEXT NOT NULL, student TEXT NOT NULL, arm TEXT NOT NULL,"
    " decided REAL NOT NULL, tier TEXT, since TEXT, PRIMARY KEY (campaign, student));"
    "INSERT INTO holdout_v8(campaign, student, arm, decided) SELECT campaign, student, arm, decided FROM holdout;"
    "DROP TABLE holdout; ALTER TABLE holdout_v8 RENAME TO holdout",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key         TEXT PRIMARY KEY,
    event_uid   TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    guardian    TEXT,
    lang        TEXT NOT NULL,
    state       TEXT NOT NULL,
    destination TEXT,
    payload     TEXT,
    provider_id TEXT,
    detail      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL,
    sent_day    TEXT,
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    claim       TEXT
);
-- Indexes a state change does not have to move (a message changes state three times): a campaign's
-- (and an event's) rows for reports, and only the deferred or awaiting rows for the release loop.
CREATE INDEX IF NOT EXISTS deliveries_campaign_event ON deliveries(campaign, event_uid);
CREATE INDEX IF NOT EXISTS deliveries_deferred_due ON deliveries(channel, not_before) WHERE state = 'deferred';
CREATE INDEX IF NOT EXISTS deliveries_awaiting ON deliveries(channel, event_uid, campaign)
    WHERE state = 'awaiting_approval';
CREATE INDEX IF NOT EXISTS deliveries_by_guardian_day ON deliveries(guardian, channel, sent_day);
-- rendered content (parts and subject), stored once however many families' rows share it
CREATE TABLE IF NOT EXISTS contents (
    hash    TEXT PRIMARY KEY,
    content TEXT NOT NULL
) WITHOUT ROWID;
-- Messages per event, campaign, channel, language and state, kept by the triggers below in the
-- transaction that moves the rows: the console's inbox and delivery pages read these few rows, not
-- the 850,000 of a district-wide event (bench/README.md).
CREATE TABLE IF NOT EXISTS tallies (
    event_uid TEXT NOT NULL,
    campaign  TEXT NOT NULL,
    channel   TEXT NOT NULL,
    lang      TEXT NOT NULL,
    state     TEXT NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (event_uid, campaign, channel, lang, state)
) WITHOUT ROWID;
-- Who approved or rejected which event's campaign (comms/approvals.py): a campaign with `approval:
-- two` is decided when two different people said yes. `decisions` holds the outcome, once.
CREATE TABLE IF NOT EXISTS approvals (
    event_uid TEXT NOT NULL,
    campaign  TEXT NOT NULL,
    who       TEXT NOT NULL,
    verdict   TEXT NOT NULL,
    at        REAL NOT NULL,
    PRIMARY KEY (event_uid, campaign, who)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    event_uid TEXT NOT NULL,
    campaign  TEXT NOT NULL,
    verdict   TEXT NOT NULL,
    at        REAL NOT NULL,
    PRIMARY KEY (event_uid, campaign)
) WITHOUT ROWID;
-- Press-draft revisions: revision 0 is the draft as rendered (its row's content), each edit adds one.
CREATE TABLE IF NOT EXISTS draft_revisions (
    ledger_key TEXT NOT NULL,
    rev        INTEGER NOT NULL,
    md         TEXT NOT NULL,
    who        TEXT NOT NULL,
    at         REAL NOT NULL,
    PRIMARY KEY (ledger_key, rev)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS draft_approvals (
    ledger_key TEXT NOT NULL,
    rev        INTEGER NOT NULL,
    who        TEXT NOT NULL,
    at         REAL NOT NULL,
    PRIMARY KEY (ledger_key, rev, who)
) WITHOUT ROWID;
-- Every approval, rejection and edit, append-only: the triggers refuse any change to a written line.
CREATE TABLE IF NOT EXISTS audit (
    id        INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    who       TEXT NOT NULL,
    action    TEXT NOT NULL,
    event_uid TEXT,
    campaign  TEXT,
    detail    TEXT
);
-- the digest of each event handled: the same id with another body is a conflict, not a retry
CREATE TABLE IF NOT EXISTS events (
    uid     TEXT PRIMARY KEY,
    digest  TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
-- what families text back that is not a keyword, for the office to read (`comms report --replies`)
CREATE TABLE IF NOT EXISTS replies (
    provider_id TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    address     TEXT NOT NULL,
    body        TEXT NOT NULL,
    received    REAL NOT NULL
) WITHOUT ROWID;
-- A sender's throughput limit (Twilio's messages per second), one token bucket shared by every
-- delivery process on every host (Ledger.take_budget), timed by the database's own clock.
CREATE TABLE IF NOT EXISTS budgets (
    name   TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at     REAL NOT NULL
);
-- A campaign's randomized hold-out (`holdout` in campaigns.yaml): each student's arm, decided the
-- first time the student would get a message and never again (a redelivery, a restart or a changed
-- fraction keep it), with that message's tier and day (district time): `comms effect` follows the
-- student's attendance from that day, in either arm.
CREATE TABLE IF NOT EXISTS holdout (
    campaign TEXT NOT NULL,
    student  TEXT NOT NULL,
    arm      TEXT NOT NULL,
    decided  REAL NOT NULL,
    tier     TEXT,
    since    TEXT,
    PRIMARY KEY (campaign, student)
);
CREATE TABLE IF NOT EXISTS suppressions (
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    reason  TEXT NOT NULL,
    source  TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (channel, address)
);
"""

#: the tallies kept in the transaction that moves the rows, and the audit log kept append-only, in
#: each engine's own trigger language
TRIGGERS = {
    "sqlite": """
CREATE TRIGGER IF NOT EXISTS tally_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO tallies VALUES (new.event_uid, new.campaign, new.channel, new.lang, new.state, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS tally_update AFTER UPDATE OF state ON deliveries WHEN old.state <> new.state BEGIN
    UPDATE tallies SET n = n - 1 WHERE event_uid = old.event_uid AND campaign = old.campaign
        AND channel = old.channel AND lang = old.lang AND state = old.state;
    INSERT INTO tallies VALUES (new.event_uid, new.campaign, new.channel, new.lang, new.state, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
""",
    "postgresql": """
-- Statement triggers over the transition tables: a batch of 5,000 moves is counted by one grouped
-- upsert, in the tallies' key order (so two writers lock the tally rows they share in one order),
-- instead of two statements per row (bench/README.md).
CREATE OR REPLACE FUNCTION comms_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tallies SELECT event_uid, campaign, channel, lang, state, count(*) FROM new_rows
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (event_uid, campaign, channel, lang, state) DO UPDATE SET n = tallies.n + excluded.n;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION comms_tally_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- each row out of its old state and into its new one; a row whose state stayed counts -1 + 1
    -- (no join of the transition tables: they have no index)
    INSERT INTO tallies SELECT event_uid, campaign, channel, lang, state, sum(n) FROM (
            SELECT event_uid, campaign, channel, lang, state, -1 AS n FROM old_rows
            UNION ALL
            SELECT event_uid, campaign, channel, lang, state, 1 FROM new_rows
        ) moved GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (event_uid, campaign, channel, lang, state) DO UPDATE SET n = tallies.n + excluded.n;
    RETURN NULL;
END $$;
DROP FUNCTION IF EXISTS comms_tally() CASCADE;
CREATE OR REPLACE TRIGGER tally_insert AFTER INSERT ON deliveries REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION comms_tally_insert();
CREATE OR REPLACE TRIGGER tally_update AFTER UPDATE ON deliveries REFERENCING OLD TABLE AS old_rows
    NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comms_tally_update();
CREATE OR REPLACE FUNCTION comms_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit FOR EACH ROW
    EXECUTE FUNCTION comms_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT
    EXECUTE FUNCTION comms_append_only();
""",
}
#: the database server's clock, in seconds since the epoch: one clock for processes on many hosts
DB_NOW = {
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "SELECT extract(epoch FROM clock_timestamp())::float8",
}
#: the rendered content a row's payload refers to
CONTENT_REF = {"sqlite": "json_extract(payload, '$.content')", "postgresql": "(payload::jsonb ->> 'content')"}


def sent_today_sql(guardians: int) -> str:
    # INDEXED BY: with hundreds of guardians in the IN list, SQLite's planner preferred ledger v2's
    # (channel, state) index and scanned every message sent on the channel: 0.33 s per query at
    # 260,000 rows, so a district-wide fan-out went quadratic (bench/README.md). By guardian: 0.5 ms.
    return (
        "SELECT guardian, count(*) FROM deliveries INDEXED BY deliveries_by_guardian_day WHERE channel=? AND "
        f"sent_day=? AND state IN ({', '.join(repr(s.value) for s in sorted(WENT_OUT))}) "
        f"AND guardian IN ({','.join('?' * guardians)}) GROUP BY guardian"
    )


@functools.cache
def _normaliser(channel: str) -> Callable[[str], str]:
    return channel_class(channel).normalise if channel in REGISTRY else str.strip


def address_key(channel: str, address: str) -> str:
    """The form the channel keeps an address in on the suppression list (its class says)."""
    return _normaliser(channel)(address)


def _normalise_suppressions(tx: Tx) -> None:
    """Version 3 stored addresses as imported: rewrite them in the form lookups use."""
    rows = tx.read("SELECT channel, address, reason, source, created FROM suppressions")
    changed = [(c, a, r, s, t, address_key(c, a)) for c, a, r, s, t in rows if address_key(c, a) != a]
    tx.executemany("DELETE FROM suppressions WHERE channel=? AND address=?", [(c, a) for c, a, *_ in changed])
    tx.executemany(
        "INSERT INTO suppressions(channel, address, reason, source, created) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(c, key, r, s, t) for c, _, r, s, t, key in changed],
    )


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
    guardian: str | None = None
    destination: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    state: State
    destination: str | None
    payload: dict[str, Any] | None
    updated: float
    guardian: str | None
    attempts: int = 0  # how often it went to `sending`: the version a claim compares (mark_sending)


_ROW = "key, state, destination, payload, updated, guardian, attempts"
#: what a new row takes from its Entry, before the columns of its first state
_ENTRY = (
    "key",
    "event_uid",
    "event_type",
    "campaign",
    "channel",
    "recipient",
    "guardian",
    "lang",
    "destination",
    "created",
)
#: each column's type, for PostgreSQL's arrays of a batch (Ledger._batch)
_PG_TYPES = {
    **dict.fromkeys(_ENTRY, "text"),
    **dict.fromkeys(("state", "payload", "sent_day", "provider_id", "detail", "claim"), "text"),
    **dict.fromkeys(("created", "updated", "not_before"), "float8"),
    **dict.fromkeys(("attempts", "seen"), "int"),
}


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows as one argument list of one array per column (unnest() makes them rows again)."""
    return [tuple(list(column) for column in zip(*rows, strict=True))] if rows else []


class Ledger:
    """The ledger in a SQLite file (a path) or a PostgreSQL database (a postgresql:// URL)."""

    def __init__(self, target: str | Path, clock: Clock = system_clock) -> None:
        self.target = target
        self.clock = clock
        self._opened: dict[str, Entry] = {}  # the last open()'s entries: rows not yet written are inserted
        self._new_events: dict[str, str] = {}  # uid -> digest, written with the next row write
        self.db = open_db(target, "ledger")
        self.content_ref = CONTENT_REF[self.db.dialect]
        # Check and create in one exclusive transaction: two consumers opening a new ledger at the same
        # time must not see each other's tables before the schema version is stamped.
        self.db.transact(self._set_up, "cannot set up its tables", exclusive=True)

    @property
    def conn(self) -> Any:
        """The engine's own connection (sqlite3 or psycopg), for tests and tools."""
        return self.db.conn  # type: ignore[attr-defined]

    def _set_up(self, tx: Tx) -> None:
        version = self.db.schema_version(tx, "deliveries")
        # only SQLite ledgers predate version 7; PostgreSQL's history starts there
        migrations = MIGRATIONS if self.db.dialect == "sqlite" else {v: m for v, m in MIGRATIONS.items() if v >= 7}
        if version is not None and version != SCHEMA_VERSION and version not in migrations:
            raise ConfigError(
                f"{self.db.name} has schema {version}, this version needs {SCHEMA_VERSION}: "
                "move it aside (it is the record of what was sent) and start a new one"
            )
        # each step from the stored version on, in order (a version 2 ledger takes 2, 3, 4 and 5)
        steps = range(version, SCHEMA_VERSION) if version is not None else range(0)
        migration = ";".join(migrations[v] for v in steps)
        for statement in self.db.ddl(migration + ";" + SCHEMA + TRIGGERS[self.db.dialect]):
            tx.execute(statement)
        if version is not None and version < 4:
            _normalise_suppressions(tx)
        self.db.stamp(tx, "deliveries", SCHEMA_VERSION)

    def write(self, *statements: tuple[str, Sequence[tuple[Any, ...]]]) -> None:
        """executemany of each (sql, rows), in one exclusive transaction (the approvals and drafts
        tables: a yes counted with the others' yeses decides, whoever clicks at the same moment)."""
        self._write(*statements, exclusive=True)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.read(sql, args)

    def _now(self) -> float:
        return self.clock().timestamp()

    def _write(
        self,
        *statements: tuple[str, Sequence[tuple[Any, ...]]],
        guarded: int = 0,
        to: State | None = None,
        exclusive: bool = False,
        claim: str | None = None,
        keys: Sequence[Sequence[str]] = (),
    ) -> tuple[list[int], set[str]]:
        """executemany of each (sql, rows), all in one transaction (with the events seen since the
        last): the rows each statement changed, and the keys another process claimed first.

        The first `guarded` statements are state changes that touch a row only where the move is
        allowed (the rows of `keys[i]`): each must change, or IllegalTransition rolls the whole
        transaction back. With
        `claim` (the token this write stamps on the rows it moves to `sending`), a row that another
        process's claim moved since it was read is not an error: it is theirs, and returned."""
        if not any(rows for _, rows in statements):
            return [0] * len(statements), set()
        if self._new_events:
            now = self._now()
            statements = (
                *statements,
                (
                    "INSERT INTO events(uid, digest, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [(u, d, now) for u, d in self._new_events.items()],
                ),
            )

        def work(tx: Tx) -> tuple[list[int], set[str]]:
            counts, lost = [], set()
            for i, (sql, rows) in enumerate(statements):
                changed = tx.executemany(sql, rows) if rows else 0
                if i < guarded and changed != len(keys[i]):
                    why, theirs = self._refused(tx, keys[i], to, claim)
                    if why:
                        raise IllegalTransition(why)
                    lost |= theirs
                counts.append(changed)
            return counts, lost

        out = self.db.transact(work, exclusive=exclusive)
        self._new_events.clear()
        return out

    def _refused(self, tx: Tx, keys: Sequence[str], to: State | None, claim: str | None) -> tuple[str | None, set[str]]:
        """Why a guarded state change left rows where they were, unless each of them is already past
        `to` (then there was nothing to do) or, with `claim`, another process claimed it."""
        found: dict[str, tuple[str, str | None]] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            q = f"SELECT key, state, claim FROM deliveries WHERE key IN ({','.join('?' * len(chunk))})"
            found.update((k, (st, c)) for k, st, c in tx.read(q, chunk))
        theirs = {k for k in keys if claim is not None and found.get(k, ("", None))[1] not in (None, claim)}
        target = to or State.NEW
        stuck = [k for k in keys if k not in theirs and found.get(k, ("",))[0] not in _FROM[target] + _PAST[target]]
        if not stuck:
            return None, theirs
        where = ", ".join(f"{k[:12]}… is {found[k][0] if k in found else 'missing'}" for k in stuck[:3])
        return f"ledger: refused to move {where} to {to}: TRANSITIONS does not allow it", theirs

    def _write_states(
        self,
        state: State,
        items: list[tuple[Any, ...]],
        columns: dict[str, str],
        contents: Sequence[tuple[str, str]] = (),
        seen: Mapping[str, int] | None = None,
        claim: str | None = None,
    ) -> set[str]:
        """Move each (key, *values) to `state`, one value per column, with the contents they refer to.

        `columns` maps a column to how its value is applied ("{}": set it; "deliveries.attempts+{}":
        add it; the row's own columns named with their table, which PostgreSQL's upsert needs).
        Rows opened but not yet in the ledger are inserted with their entry's fields: one row write,
        not an insert and an update. The others are updated, only from a state TRANSITIONS allows.

        `seen` (key -> the `attempts` read with the row) makes the move to `sending` a claim: a
        compare-and-set on `attempts`, which every claim raises by one, so of two processes that
        read the same row only one moves it; `claim` is the token the columns stamp on the rows
        moved. Returns the keys another process claimed first."""
        if state not in TRANSITIONS[State.NEW] and any(key in self._opened for key, *_ in items):
            raise IllegalTransition(f"ledger: a message not in the ledger cannot start as {state}")
        allowed = _sql_in(_FROM[state])
        columns = {"state": "{}", **columns}
        entry_columns = [*_ENTRY, *columns]
        insert = self._batch(
            f"INSERT INTO deliveries({', '.join(entry_columns)})",
            entry_columns,
            " ON CONFLICT(key) DO UPDATE SET "
            + ", ".join(f"{c}={how.format('excluded.' + c)}" for c, how in columns.items())
            + f" WHERE deliveries.state IN ({allowed})"
            + (" AND deliveries.attempts = excluded.attempts - 1" if seen is not None else ""),
        )
        update = self._update(columns, f"deliveries.state IN ({allowed})", cas=seen is not None)
        now = self._now()
        new: dict[str, tuple[Any, ...]] = {}
        old: list[tuple[Any, ...]] = []
        for key, *values in items:
            e = self._opened.get(key)
            if e is None:
                old.append((state.value, *values, key) + ((seen[key],) if seen is not None else ()))
            else:
                entry = (
                    e.event_uid,
                    e.event_type,
                    e.campaign,
                    e.channel,
                    e.recipient,
                    e.guardian,
                    e.lang,
                    e.destination,
                )
                new[key] = (key, *entry, now, state.value, *values)  # one row a key: an upsert moves it once
        _, lost = self._write(
            (insert[0], insert[1](list(new.values()))),
            (update[0], update[1](old)),
            ("INSERT INTO contents(hash, content) VALUES (?, ?) ON CONFLICT DO NOTHING", contents),
            guarded=2,
            to=state,
            claim=claim,
            keys=(list(new), [r[-1 - (seen is not None)] for r in old]),
        )
        for key in new:  # in the ledger now: from here on plain updates
            self._opened.pop(key, None)
        return lost

    # Each statement of a batch, in the engine's way: on SQLite one execution per row (executemany:
    # a prepared statement, no round trips); on PostgreSQL one statement for the whole batch over
    # unnest() of one array per column, so the server plans it once and the tallies' statement
    # triggers count the batch in one go (bench/README.md: 7,142 -> row writes/s).
    def _batch(
        self, head: str, columns: Sequence[str], tail: str
    ) -> tuple[str, Callable[[Sequence[tuple[Any, ...]]], list[tuple[Any, ...]]]]:
        """`head` VALUES (...) `tail` for rows of `columns`: (sql, rows -> statement arguments)."""
        if self.db.dialect != "postgresql":
            return f"{head} VALUES ({', '.join('?' * len(columns))}){tail}", list
        arrays = ", ".join(f"?::{_PG_TYPES[c]}[]" for c in columns)
        return f"{head} SELECT * FROM unnest({arrays}){tail}", _columns

    def _update(
        self, columns: Mapping[str, str], where: str, cas: bool = False
    ) -> tuple[str, Callable[[Sequence[tuple[Any, ...]]], list[tuple[Any, ...]]]]:
        """UPDATE of rows (*values of `columns`, key[, attempts as read]) where `where` holds (and,
        with `cas`, the row's attempts are still those read): (sql, rows -> statement arguments)."""
        if self.db.dialect != "postgresql":
            sets = ", ".join(c + "=" + how.format("?") for c, how in columns.items())
            return f"UPDATE deliveries SET {sets} WHERE key=? AND {where}" + (" AND attempts = ?" if cas else ""), list
        names = [*columns, "key", *(["seen"] if cas else [])]
        sets = ", ".join(c + "=" + how.format("v." + c) for c, how in columns.items())
        arrays = ", ".join(f"?::{_PG_TYPES[c]}[]" for c in names)
        sql = (
            f"UPDATE deliveries SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) "
            f"WHERE deliveries.key = v.key AND {where}" + (" AND deliveries.attempts = v.seen" if cas else "")
        )
        return sql, _columns

    @staticmethod
    def _pack(payloads: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]]]:
        """Payload JSON per row with the rendered content replaced by a reference, and the contents.

        A mass message's 300,000 rows share one content: written once, not 300,000 times."""
        refs: dict[tuple[int, str | None], str] = {}  # the payloads are alive, so id() is unique here
        contents, out = [], []
        for p in payloads:
            ref = refs.get((id(p["body"]), p["subject"]))
            if ref is None:
                content = json.dumps({"body": p["body"], "subject": p["subject"]}, ensure_ascii=False, sort_keys=True)
                ref = refs[(id(p["body"]), p["subject"])] = hashlib.sha256(content.encode()).hexdigest()[:32]
                contents.append((ref, content))
            out.append(json.dumps({**p, "body": None, "subject": None, "content": ref}, ensure_ascii=False))
        return out, contents

    def _unpack(self, payload: str | None, cache: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        if not payload:
            return None
        p: dict[str, Any] = json.loads(payload)
        ref = p.pop("content", None)
        if ref is not None:
            if ref not in cache:
                ((content,),) = self.db.read("SELECT content FROM contents WHERE hash=?", (ref,))
                cache[ref] = json.loads(content)
            p.update(cache[ref])
        return p

    def _read_rows(self, sql: str, args: Sequence[Any]) -> list[Row]:
        """Rows of `SELECT {_ROW} ...`, unpacked."""
        contents: dict[str, dict[str, Any]] = {}
        return [
            Row(k, State(s), d, self._unpack(p, contents), u, g, a) for k, s, d, p, u, g, a in self.db.read(sql, args)
        ]

    # -- rows -----------------------------------------------------------------------------------------
    def open(self, entries: Iterable[Entry]) -> dict[str, Row]:
        """Every key's row as it stands; a key not in the ledger yet comes back in state `new`, and
        the first write of its state inserts it (so a message costs one row write fewer)."""
        opened = {e.key: e for e in entries}
        found = self.rows(list(opened))
        self._opened = {k: e for k, e in opened.items() if k not in found}  # `new`: inserted by their first write
        return {k: found.get(k) or Row(k, State.NEW, e.destination, None, 0.0, e.guardian) for k, e in opened.items()}

    def rows(self, keys: Sequence[str]) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT {_ROW} FROM deliveries WHERE key IN ({','.join('?' * len(chunk))})"
            out.update((r.key, r) for r in self._read_rows(q, chunk))
        return out

    def mark(self, marks: Iterable[Mark]) -> None:
        """Each message's new state, provider id and detail, in one transaction per state."""
        now = self._now()
        by_state: dict[State, list[tuple[Any, ...]]] = {}
        for m in marks:
            by_state.setdefault(m.state, []).append((m.key, m.provider_id, m.detail, now))
        for state, items in by_state.items():
            self._write_states(
                state, items, {"provider_id": "coalesce({}, deliveries.provider_id)", "detail": "{}", "updated": "{}"}
            )

    def advance(self, marks: Sequence[Mark]) -> int:
        """What a provider reported (callbacks): each mark applied where TRANSITIONS allows it from
        the row's state, ignored otherwise (late, repeated or out of order, or a key not ours);
        one transaction. Returns how many rows moved."""
        now = self._now()
        by_state: dict[State, list[tuple[Any, ...]]] = {}
        for m in marks:
            by_state.setdefault(m.state, []).append((m.state.value, m.provider_id, m.detail, now, m.key))
        columns = {
            "state": "{}",
            "provider_id": "coalesce({}, deliveries.provider_id)",
            "detail": "coalesce({}, deliveries.detail)",
            "updated": "{}",
        }
        statements = []
        for state, rows in by_state.items():
            sql, args = self._update(columns, f"deliveries.state IN ({_sql_in(_FROM[state])})")
            statements.append((sql, args(rows)))
        return sum(self._write(*statements)[0])

    def mark_sending(
        self, items: Iterable[tuple[str, dict[str, Any], str]], seen: Mapping[str, int] | None = None
    ) -> set[str]:
        """(key, payload, day) before the provider is called: what a crash leaves here is reconciled.

        With `seen` (each row's `attempts` as read), the rows are claimed: the keys returned are the
        ones another delivery process claimed since they were read, which this one must not send."""
        now = self._now()
        items = list(items)
        payloads, contents = self._pack([p for _, p, _ in items])
        claim = uuid.uuid4().hex if seen is not None else None
        rows = [
            (key, payload, day, seen[key] + 1 if seen is not None else 1, now, claim)
            for (key, _, day), payload in zip(items, payloads, strict=True)
        ]
        attempts = "{}" if seen is not None else "deliveries.attempts+{}"
        return self._write_states(
            State.SENDING,
            rows,
            {"payload": "{}", "sent_day": "{}", "attempts": attempts, "updated": "{}", "claim": "{}"},
            contents,
            seen,
            claim,
        )

    def defer(self, items: Iterable[tuple[str, dict[str, Any], float, str]]) -> None:
        """(key, payload, not_before, detail): keep the rendered message until its window opens."""
        now = self._now()
        items = list(items)
        payloads, contents = self._pack([p for _, p, _, _ in items])
        self._write_states(
            State.DEFERRED,
            [(key, payload, nb, detail, now) for (key, _, nb, detail), payload in zip(items, payloads, strict=True)],
            {"payload": "{}", "not_before": "{}", "detail": "{}", "updated": "{}"},
            contents,
        )

    def hold(self, items: Iterable[tuple[str, dict[str, Any], str]]) -> None:
        """(key, payload, detail): rendered and kept until the campaign's approvers decide."""
        now = self._now()
        items = list(items)
        payloads, contents = self._pack([p for _, p, _ in items])
        self._write_states(
            State.AWAITING_APPROVAL,
            [(key, payload, detail, now) for (key, _, detail), payload in zip(items, payloads, strict=True)],
            {"payload": "{}", "detail": "{}", "updated": "{}"},
            contents,
        )

    def decided(self, channel: str) -> list[tuple[str, str, str]]:
        """(event uid, campaign, verdict) of the decided campaigns with messages still awaiting on
        `channel`: the release loop sends or cancels them."""
        # from the decisions (a few a month), each looked up in the tallies by their key's prefix: it
        # runs at every step of every consumer, and the tallies grow with every event ever handled
        return self.query(
            "SELECT d.event_uid, d.campaign, d.verdict FROM decisions d WHERE EXISTS (SELECT 1 FROM tallies t "
            "WHERE t.event_uid = d.event_uid AND t.campaign = d.campaign AND t.channel=? "
            "AND t.state='awaiting_approval' AND t.n > 0)",
            (channel,),
        )

    def awaiting(self, channel: str, event_uid: str, campaign: str, limit: int = 500) -> list[Row]:
        return self._read_rows(
            f"SELECT {_ROW} FROM deliveries INDEXED BY "
            "deliveries_awaiting WHERE channel=? AND event_uid=? AND campaign=? AND state='awaiting_approval' "
            "LIMIT ?",
            (channel, event_uid, campaign, limit),
        )

    def event_groups(
        self, campaign: str, event_uid: str
    ) -> list[tuple[str, str, str, str, int, dict[str, Any] | None]]:
        """(channel, language, state, detail, messages, one of their payloads) of an event's campaign:
        the console's send plan, in one pass over the event's rows."""
        rows = self.query(
            "SELECT channel, lang, state, coalesce(detail, ''), count(*), max(payload) FROM deliveries "
            "WHERE campaign=? AND event_uid=? GROUP BY 1, 2, 3, 4",
            (campaign, event_uid),
        )
        contents: dict[str, dict[str, Any]] = {}
        return [(c, lang, s, d, n, self._unpack(p, contents)) for c, lang, s, d, n, p in rows]

    def event_rows(self, campaign: str, event_uid: str) -> list[tuple[str, str | None, str, str, str]]:
        """(channel, guardian, language, state, detail) of each of an event's messages for a campaign."""
        return self.query(
            "SELECT channel, guardian, lang, state, coalesce(detail, '') FROM deliveries WHERE campaign=? AND "
            "event_uid=?",
            (campaign, event_uid),
        )

    def verdict(self, event_uid: str, campaign: str) -> str | None:
        """`approved` or `rejected` once the campaign's approvers decided on the event, else None."""
        rows = self.query("SELECT verdict FROM decisions WHERE event_uid=? AND campaign=?", (event_uid, campaign))
        return str(rows[0][0]) if rows else None

    def tallies(self, event_uids: Sequence[str] | None = None) -> list[tuple[str, str, str, str, str, int]]:
        """(event uid, campaign, channel, language, state, messages), from the triggers' counts."""
        q = "SELECT event_uid, campaign, channel, lang, state, n FROM tallies WHERE n > 0"
        if event_uids is None:
            return self.query(q)
        out = []
        for i in range(0, len(event_uids), 500):
            chunk = list(event_uids[i : i + 500])
            out += self.query(q + f" AND event_uid IN ({','.join('?' * len(chunk))})", chunk)
        return out

    def due(self, channel: str, now: float, limit: int = 500) -> list[Row]:
        return self._read_rows(
            f"SELECT {_ROW} FROM deliveries "
            "WHERE channel=? AND state='deferred' AND not_before<=? ORDER BY not_before LIMIT ?",
            (channel, now, limit),
        )

    def sent_today(self, channel: str, guardians: Sequence[str], day: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(guardians), 500):
            chunk = list(guardians[i : i + 500])
            out.update(self.query(sent_today_sql(len(chunk)), (channel, day, *chunk)))
        return out

    # -- the senders' shared throughput ---------------------------------------------------------------
    def take_budget(self, name: str, want: int, rate: float, burst: float) -> int:
        """Up to `want` sends from the bucket `name`, which refills at `rate` per second up to `burst`:
        how many may go now (0: wait about want / rate seconds). Shared by every process on the
        ledger's database, so N processes together keep to one sender's limit."""
        now_sql = DB_NOW[self.db.dialect]

        def work(tx: Tx) -> int:
            ((now,),) = tx.read(now_sql)
            tx.execute(
                "INSERT INTO budgets(name, tokens, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (name, burst, now)
            )
            ((tokens, at),) = tx.read("SELECT tokens, at FROM budgets WHERE name=?", (name,))
            tokens = min(burst, tokens + max(0.0, now - at) * rate)
            granted = max(0, min(want, int(tokens)))
            tx.execute("UPDATE budgets SET tokens=?, at=? WHERE name=?", (tokens - granted, now, name))
            return granted

        return self.db.transact(work, "cannot take from the send budget", exclusive=True)

    # -- events ---------------------------------------------------------------------------------------
    def remember_event(self, uid: str, digest: str) -> str:
        """The digest on record for an event id; the first time an id is seen, `digest` is recorded
        with the event's first row write (one transaction, not one more per event: a flood of
        10,000 look-alike events otherwise cost 10,000 extra fsyncs per consumer)."""
        rows = self.query("SELECT digest FROM events WHERE uid=?", (uid,))
        if rows:
            return str(rows[0][0])
        self._new_events[uid] = digest
        return digest

    # -- hold-out ---------------------------------------------------------------------------------------
    def assign(self, campaign: str, student: str, arm: str, tier: str | None = None, since: str | None = None) -> str:
        """The student's arm in the campaign's hold-out: `arm` the first time (with the tier and day of
        the message that drew it), the recorded one after."""
        self._write(
            (
                "INSERT INTO holdout(campaign, student, arm, decided, tier, since) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(campaign, student, arm, self.clock().timestamp(), tier, since)],
            )
        )
        rows = self.query("SELECT arm FROM holdout WHERE campaign=? AND student=?", (campaign, student))
        return str(rows[0][0])

    def arms(self, campaign: str) -> dict[str, str]:
        """student -> arm, for `comms report` and the effect estimate."""
        return {str(s): str(a) for s, a in self.query("SELECT student, arm FROM holdout WHERE campaign=?", (campaign,))}

    def assignments(self, campaign: str) -> list[tuple[str, str, str | None, str | None]]:
        """(student, arm, tier, day of the first message) of every student in the campaign's hold-out."""
        return self.query(
            "SELECT student, arm, tier, since FROM holdout WHERE campaign=? ORDER BY student", (campaign,)
        )

    def supersede(self, campaign: str, channel: str, event_uids: Sequence[str], why: str) -> int:
        """The messages of earlier events (`event_uids`) still held on `channel` (quiet hours, the daily
        cap, approval) move to `superseded` with `why`: a later event about the same student says
        more. One already gone (or being sent) stays as it is. Returns how many moved."""
        if not event_uids:
            return 0
        marks = [
            Mark(str(k), State.SUPERSEDED, None, why)
            for k, in self.query(
                f"SELECT key FROM deliveries WHERE campaign=? AND channel=? AND event_uid IN "
                f"({','.join('?' * len(event_uids))}) AND state IN ({_sql_in(_FROM[State.SUPERSEDED])})",
                (campaign, channel, *event_uids),
            )
        ]  # fmt: skip
        return self.advance(marks)

    # -- suppression list -------------------------------------------------------------------------------
    def suppress(self, items: Iterable[tuple[str, str, str, str]]) -> int:
        """(channel, address, reason, source); returns how many were new."""
        items = list(items)
        now = self._now()
        return self._write(
            (
                "INSERT INTO suppressions(channel, address, reason, source, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(c, address_key(c, a), r, s, now) for c, a, r, s in items],
            )
        )[0][0]

    def unsuppress(self, items: Iterable[tuple[str, str, str]]) -> int:
        """(channel, address, reason prefix): take the address off the list for entries whose reason
        starts so (a START lifts a STOP, not a bounce); returns how many were removed."""
        rows = [(c, address_key(c, a), prefix.replace("%", "") + "%") for c, a, prefix in items]
        if not rows:
            return 0
        return self._write(("DELETE FROM suppressions WHERE channel=? AND address=? AND reason LIKE ?", rows))[0][0]

    def keep_replies(self, items: Iterable[tuple[str, str, str, str]]) -> None:
        """(provider id, channel, address, body) of texts that are not keywords; a repeat is ignored."""
        now = self._now()
        self._write(
            (
                "INSERT INTO replies(provider_id, channel, address, body, received) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(*item, now) for item in items],
            )
        )

    def replies(self, limit: int = 50) -> list[tuple[str, str, str, float]]:
        """(channel, address, body, received), newest first."""
        q = "SELECT channel, address, body, received FROM replies ORDER BY received DESC LIMIT ?"
        return self.query(q, (limit,))

    def suppressed(self, channel: str, addresses: Sequence[str]) -> dict[str, str]:
        """address -> reason, for the addresses on the list."""
        out: dict[str, str] = {}
        norm = {address_key(channel, a): a for a in addresses}
        keys = list(norm)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT address, reason FROM suppressions WHERE channel=? AND address IN ({marks})"
            for addr, reason in self.query(q, (channel, *chunk)):
                out[norm[addr]] = reason
        return out

    # -- reports ----------------------------------------------------------------------------------------
    def counts(self, campaign: str | None = None) -> list[CountRow]:
        """Messages per campaign, channel, language and state (from the tallies the triggers keep)."""
        q = "SELECT campaign, channel, lang, state, CAST(sum(n) AS INTEGER) FROM tallies WHERE n > 0"
        args: tuple[str, ...] = ()
        if campaign:
            q += " AND campaign=?"
            args = (campaign,)
        q += " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        return [CountRow(*r) for r in self.query(q, args)]

    def details(self, campaign: str) -> list[DetailRow]:
        """For `comms report`: why messages were held back, failed, or not delivered (Twilio's error
        codes, SendGrid's bounce reasons), the most frequent first."""
        return [
            DetailRow(*r)
            for r in self.query(
                "SELECT channel, state, coalesce(detail, ''), count(*) FROM deliveries WHERE campaign=? "
                "AND state IN ('suppressed', 'failed', 'deferred', 'undelivered', 'bounced', 'dropped', "
                "'spam_report', 'expired', 'held_out', 'superseded') GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3",
                (campaign,),
            )
        ]

    def opted_out_since(self, campaign: str) -> list[tuple[str, str, int]]:
        """(channel, lang, families) of the campaign's recipients who went on the suppression list
        after their message was sent: STOPs, unsubscribes and spam reports the campaign may have caused."""
        q = (
            "SELECT d.channel, d.lang, count(DISTINCT d.destination) FROM deliveries d JOIN suppressions s "
            "ON s.channel = d.channel AND s.address = lower(d.destination) WHERE d.campaign=? AND d.state IN "
            f"({', '.join(repr(s.value) for s in sorted(WENT_OUT))}) AND s.created >= d.updated "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return [(c, lang, n) for c, lang, n in self.query(q, (campaign,))]

    # -- retention --------------------------------------------------------------------------------------
    def prune(self, before: float, dry_run: bool = False) -> dict[str, int]:
        """Forget what identifies a family in the messages created before `before` that are done:
        the rendered text and the address (the payload and `destination`), and the addresses and
        numbers in the detail (a bounce reason quotes one); the texts families sent before it too.
        What stays: campaign, channel, language, state and reason (the reports and tallies), the key
        (a redelivered event is still skipped), the guardian's roster id; press drafts stay whole,
        and the suppression list stays (an opt-out never expires). Returns what it changed."""
        from comms.privacy import scrub

        families = tuple(c.name for c in channel_classes() if c.audience == "families")
        final = tuple(s.value for s in FINAL)
        where = (
            f"created < ? AND state IN ({','.join('?' * len(final))}) AND channel IN "
            f"({','.join('?' * len(families))}) AND (payload IS NOT NULL OR destination IS NOT NULL)"
        )
        args = (before, *final, *families)
        rows = self.db.read(f"SELECT key, detail FROM deliveries WHERE {where}", args, "cannot prune")
        ((replies,),) = self.db.read("SELECT count(*) FROM replies WHERE received < ?", (before,), "cannot prune")
        if dry_run:
            return {"messages": len(rows), "replies": replies, "contents": 0}
        ref = self.content_ref

        def work(tx: Tx) -> int:
            tx.executemany(
                "UPDATE deliveries SET payload=NULL, destination=NULL, detail=? WHERE key=?",
                [(scrub(d) if d else d, k) for k, d in rows],
            )
            tx.execute("DELETE FROM replies WHERE received < ?", (before,))
            return tx.execute(
                f"DELETE FROM contents WHERE hash NOT IN (SELECT {ref} FROM deliveries "
                f"WHERE payload IS NOT NULL AND {ref} IS NOT NULL)"
            )

        contents = self.db.transact(work, "cannot prune")
        return {"messages": len(rows), "replies": replies, "contents": contents}

    def close(self) -> None:
        self.db.close()


_MESSAGE_FIELDS = tuple(f.name for f in fields(Message))


def message_payload(message: Message) -> dict[str, Any]:
    """A message's fields, sharing its body (not a deep copy like asdict: the ledger stores a body
    shared by many messages once)."""
    return {name: getattr(message, name) for name in _MESSAGE_FIELDS}


__all__ = [
    "FINAL",
    "TRANSITIONS",
    "CountRow",
    "DetailRow",
    "Entry",
    "IllegalTransition",
    "Ledger",
    "Mark",
    "Row",
    "State",
    "delivery_key",
    "message_payload",
    "sent_today_sql",
]
