"""Daily attendance in, #ShowUpMDCPS threshold events out: the `attendance` consumer.

For each student and school year it keeps the latest record per date (a later CloudEvent `time`
for the same date is a correction and replaces it; duplicates and out-of-order days change nothing),
counts excused and unexcused absences, and publishes `attendance.absence-threshold` when the count
reaches a tier of campaigns.yaml. It works a batch of records at a time (one transaction), then looks
at each student the batch touched:

- once per student, school year and tier: a correction that lowers the count and a later crossing
  do not alert the same tier again (set `realert: true` on the campaign to alert again);
- when several tiers are crossed in one batch (a backfill, a late batch of days), the family gets
  the highest: the lower tiers' events say `superseded_by` it, and the pipeline ledgers their
  messages `superseded`; the highest names the student's earlier tier events (`earlier`), whose
  messages still held (quiet hours, the daily cap, approval) are superseded too;
- an event says the count and the last school day recorded (`as_of`), and its id and time derive from
  them and from the stored records, never from the clock or the batch: the event is published before
  the tier is recorded, so a crash in between publishes it again with the same id and body, and the
  delivery ledger sends it once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comms.bus import Bus
from comms.config import Settings
from comms.events import AttendanceRecorded, Event, conflicting_duplicate, make_event
from comms.store import SqliteFile

SOURCE = "district-comms/attendance"
ABSENT = ("excused", "unexcused")

SCHEMA = """
CREATE TABLE IF NOT EXISTS attendance (
    student_id TEXT NOT NULL, school_year TEXT NOT NULL, date TEXT NOT NULL, category TEXT NOT NULL,
    event_time REAL NOT NULL, record_id TEXT NOT NULL, PRIMARY KEY (student_id, school_year, date)
);
CREATE TABLE IF NOT EXISTS events (uid TEXT PRIMARY KEY, digest TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tier_alerts (
    student_id TEXT NOT NULL, school_year TEXT NOT NULL, tier TEXT NOT NULL, absences INTEGER NOT NULL,
    sent INTEGER NOT NULL, PRIMARY KEY (student_id, school_year, tier)
);
"""


class AttendanceCounter:
    def __init__(
        self, path: str | Path, settings: Settings, bus: Bus, topic: str, check: Callable[[Event], None]
    ) -> None:
        self.file = SqliteFile(Path(path), "attendance counts")
        self.conn = self.file.open(synchronous="NORMAL")
        with self.file.errors("cannot set up its tables"):
            self.conn.executescript(SCHEMA)
            columns = {r[1] for r in self.conn.execute("PRAGMA table_info(tier_alerts)")}
            if "event_id" not in columns:  # a store from before `earlier`: its alerts name no event
                self.conn.execute("ALTER TABLE tier_alerts ADD COLUMN event_id TEXT")
        self.bus, self.topic, self._check = bus, topic, check
        self.tiers: list[tuple[int, str, bool]] = sorted(
            {
                (t.min_absences, t.name, c.realert)
                for _, c in settings.campaigns_for("attendance.absence-threshold")
                for t in c.tiers or ()
            }
        )

    def check(self, event: Event) -> None:
        """A record's own checks (the roster knows the student...), before its batch is applied."""
        if isinstance(event.data, AttendanceRecorded):
            self._check(event)

    def absences(self, student_id: str, school_year: str) -> int:
        n: int = self.conn.execute(
            "SELECT count(*) FROM attendance WHERE student_id=? AND school_year=? AND category IN (?, ?)",
            (student_id, school_year, *ABSENT),
        ).fetchone()[0]
        return n

    def handle(self, event: Event) -> Counter[str]:
        """One record alone (its own batch)."""
        self.check(event)
        return self.handle_many([event])

    def handle_many(self, events: list[Event]) -> Counter[str]:
        """Record a batch of checked events, then announce the tiers each student it touched crossed."""
        records = [(e, e.data) for e in events if isinstance(e.data, AttendanceRecorded)]
        if not records:
            return Counter()
        with self.file.errors():
            self.file.check()
            out = self._record(records)
            latest: dict[tuple[str, str], AttendanceRecorded] = {}
            for _, d in records:  # the student's latest record says where and how the student learns
                k = (d.student_id, d.school_year)
                if k not in latest or d.date >= latest[k].date:
                    latest[k] = d
            for d in latest.values():
                out += self._announce(d)
        return out

    def _record(self, records: list[tuple[Event, AttendanceRecorded]]) -> Counter[str]:
        out: Counter[str] = Counter()
        with self.conn:
            for event, d in records:
                self.conn.execute("INSERT OR IGNORE INTO events VALUES (?, ?)", (event.uid, event.digest))
                (known,) = self.conn.execute("SELECT digest FROM events WHERE uid=?", (event.uid,)).fetchone()
                if known != event.digest:
                    raise conflicting_duplicate(event)  # the whole batch rolls back; the worker retries it one by one
                cur = self.conn.execute(
                    "INSERT INTO attendance VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(student_id, school_year, date) DO UPDATE SET category=excluded.category,"
                    " event_time=excluded.event_time, record_id=excluded.record_id"
                    " WHERE excluded.event_time > attendance.event_time",
                    (d.student_id, d.school_year, d.date.isoformat(), d.category, event.time.timestamp(), d.record_id),
                )
                out["recorded" if cur.rowcount else "unchanged"] += 1
        return out

    def _announce(self, d: AttendanceRecorded) -> Counter[str]:
        """Publish the tiers the student's count has crossed and not announced yet: the highest, and
        the lower ones as superseded by it."""
        out: Counter[str] = Counter()
        student, year = d.student_id, d.school_year
        count = self.absences(student, year)
        alerts = {
            t: (sent, eid)
            for t, sent, eid in self.conn.execute(
                "SELECT tier, sent, event_id FROM tier_alerts WHERE student_id=? AND school_year=?", (student, year)
            )
        }
        # a campaign that asks for it alerts a tier again after the count fell below it
        below = [name for m, name, realert in self.tiers if realert and count < m and name in alerts]
        if below:
            with self.conn:
                self.conn.executemany(
                    "DELETE FROM tier_alerts WHERE student_id=? AND school_year=? AND tier=?",
                    [(student, year, n) for n in below],
                )
            for n in below:
                del alerts[n]
        crossed = [name for m, name, _ in self.tiers if count >= m and name not in alerts]
        if not crossed:
            return out
        as_of, last_time = self.conn.execute(
            "SELECT max(date), max(event_time) FROM attendance WHERE student_id=? AND school_year=?", (student, year)
        ).fetchone()
        stamp = hashlib.sha256(f"{count}|{as_of}".encode()).hexdigest()[:8]
        time = dt.datetime.fromtimestamp(last_time, dt.UTC).isoformat()
        top = crossed[-1]
        earlier = sorted(eid for sent, eid in alerts.values() if sent and eid)
        ids = {name: f"absence-{student}-{year}-{name}-{stamp}" for name in crossed}
        for name in crossed:
            data: dict[str, Any] = {
                "student_id": student,
                "school_id": d.school_id,
                "absences": count,
                "tier": name,
                "school_year": year,
                "as_of": as_of,
                **({"learning_mode": d.learning_mode} if d.learning_mode else {}),
                **({"superseded_by": top} if name != top else {}),
                **({"earlier": earlier} if name == top and earlier else {}),
            }
            raw = make_event("attendance.absence-threshold", data, id=ids[name], source=SOURCE, time=time)
            self.bus.publish(self.topic, raw, key=f"student:{student}")
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO tier_alerts(student_id, school_year, tier, absences, sent, event_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(student, year, name, count, int(name == top), ids[name]) for name in crossed],
            )
        out["threshold_published"] += 1
        out["tiers_superseded"] += len(crossed) - 1
        return out

    def close(self) -> None:
        self.conn.close()
