"""The SQLite ledger's own matters: schema versions and migrations, SQLite's query plan. What both
engines must do is in test_ledger_contract.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from comms.errors import ConfigError
from comms.ledger import SCHEMA_VERSION, Entry, Ledger, Mark, State, sent_today_sql


def test_an_old_ledger_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE deliveries (key TEXT PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match=f"has schema 0, this version needs {SCHEMA_VERSION}: move it aside"):
        Ledger(path)


def test_open_is_idempotent_and_suppressions_normalise_email(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    e = Entry("k1", "src#1", "meals.schedule", "meal-schedule", "email", "G1", "es", "G1", "Ana@Example.org")
    assert ledger.open([e])["k1"].state == "new"  # read only: the first write of a state inserts the row
    assert ledger.conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    ledger.mark([Mark("k1", State.SENDING)])
    ledger.mark([Mark("k1", State.SENT, "id-1")])
    assert ledger.open([e])["k1"].state == "sent"  # a redelivery finds it done
    assert ledger.suppress([("email", "ANA@example.org", "unsubscribed", "test")]) == 1
    assert ledger.suppress([("email", "ana@example.org", "unsubscribed", "test")]) == 0
    assert ledger.suppressed("email", ["Ana@Example.org", "b@example.org"]) == {"Ana@Example.org": "unsubscribed"}
    ledger.close()


def test_daily_cap_lookup_searches_by_guardian(tmp_path: Path) -> None:
    """With 500 guardians in the IN list SQLite's planner picked the (channel, state) index and scanned
    every message of the channel: a district-wide fan-out went quadratic."""
    ledger = Ledger(tmp_path / "ledger.db")
    guardians = [f"G{i}" for i in range(500)]
    plan = " ".join(
        str(row[-1])
        for row in ledger.conn.execute(
            "EXPLAIN QUERY PLAN " + sent_today_sql(len(guardians)), ("sms", "2020-09-02", *guardians)
        )
    )
    ledger.close()
    assert "USING INDEX deliveries_by_guardian_day (guardian=? AND channel=? AND sent_day=?)" in plan, plan


def test_shared_content_is_stored_once_and_a_version_2_ledger_migrates(tmp_path: Path) -> None:
    from comms.channels.base import Message
    from comms.ledger import message_payload

    path = tmp_path / "l.db"
    ledger = Ledger(path)
    ledger.conn.executescript(  # as a version 2 ledger was
        "DROP TABLE contents; DROP TABLE tallies; DROP TRIGGER tally_insert; DROP TRIGGER tally_update;"
        "DROP INDEX deliveries_campaign_event; DROP INDEX deliveries_deferred_due;"
        "ALTER TABLE deliveries DROP COLUMN claim;"
        "CREATE INDEX deliveries_by_campaign ON deliveries(campaign, channel, state);"
        "CREATE INDEX deliveries_deferred ON deliveries(channel, state, not_before); PRAGMA user_version=2;"
    )
    ledger.conn.execute(
        "INSERT INTO deliveries(key, event_uid, event_type, campaign, channel, recipient, lang, state, payload,"
        " created, updated) VALUES ('old', 'e', 't', 'c', 'sms', 'G0', 'en', 'sending', ?, 0, 0)",
        ('{"key": "old", "body": {"txt": "inline"}, "subject": null}',),
    )
    ledger.close()
    ledger = Ledger(path)  # migrates: 2 -> 3 -> ... -> 7
    assert ledger.counts() == [("c", "sms", "en", "sending", 1)]  # counted into the tallies
    body = {"txt": "Free meals", "html": "<p>Free meals</p>"}
    messages = [
        Message(
            key=f"k{i}",
            channel="email",
            campaign="c",
            event_uid="e",
            lang="es",
            to=f"p{i}@example.org",
            body=body,
            subject="Comidas",
        )
        for i in range(300)
    ]
    ledger.open(Entry(m.key, "e", "t", "c", "email", f"G{i}", "es") for i, m in enumerate(messages))
    ledger.mark_sending((m.key, message_payload(m), "2020-09-02") for m in messages)
    assert ledger.conn.execute("SELECT count(*) FROM contents").fetchone()[0] == 1
    rows = ledger.rows(["k7", "old"])
    assert Message(**rows["k7"].payload) == messages[7]  # read back whole
    assert rows["old"].payload["body"] == {"txt": "inline"}  # a version 2 payload still reads
    assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {r[0] for r in ledger.conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"deliveries_campaign_event", "deliveries_deferred_due"} <= indexes
    assert not {"deliveries_by_campaign", "deliveries_deferred"} & indexes
    ledger.close()
