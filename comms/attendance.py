"""Daily attendance in, #ShowUpMDCPS threshold events out: the `attendance` consumer.

For each student and school year it keeps the latest record per date (a later CloudEvent `time`
for the same date is a correction and replaces it; duplicates and out-of-order days change nothing),
counts excused and unexcused absences, and publishes `attendance.absence-threshold` when the count
reaches a tier of campaigns.yaml:

- once per student, school year and tier: a correction that lowers the count and a later crossing
  do not alert the same tier again (set `realert: true` on the campaign to alert again);
- when several tiers are crossed at once (a late batch of days), only the highest is sent, so a
  family gets one message, and the lower tiers are recorded as passed;
- the event is published before the tier is recorded: a crash in between publishes it again with
  the same CloudEvent id and body (both derive from the attendance record that crossed the tier, never
  from the clock), and the delivery ledger sends it once; a realert after a correction is crossed by
  another record, so it is a new event.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

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
        self.bus, self.topic, self.check = bus, topic, check
        self.tiers: list[tuple[int, str, bool]] = sorted(
            {
                (t.min_absences, t.name, c.realert)
                for _, c in settings.campaigns_for("attendance.absence-threshold")
                for t in c.tiers or ()
            }
        )

    def absences(self, student_id: str, school_year: str) -> int:
        n: int = self.conn.execute(
            "SELECT count(*) FROM attendance WHERE student_id=? AND school_year=? AND category IN (?, ?)",
            (student_id, school_year, *ABSENT),
        ).fetchone()[0]
        return n

    def handle(self, event: Event) -> Counter[str]:
        if not isinstance(event.data, AttendanceRecorded):  # the one type this consumer counts
            return Counter()
        self.check(event)
        with self.file.errors():
            self.file.check()
            return self._count(event, event.data)

    def _count(self, event: Event, d: AttendanceRecorded) -> Counter[str]:
        out: Counter[str] = Counter()
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO events VALUES (?, ?)", (event.uid, event.digest))
            (known,) = self.conn.execute("SELECT digest FROM events WHERE uid=?", (event.uid,)).fetchone()
            if known != event.digest:
                raise conflicting_duplicate(event)
            cur = self.conn.execute(
                "INSERT INTO attendance VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(student_id, school_year, date) DO UPDATE"
                " SET category=excluded.category, event_time=excluded.event_time, record_id=excluded.record_id"
                " WHERE excluded.event_time > attendance.event_time",
                (d.student_id, d.school_year, d.date.isoformat(), d.category, event.time.timestamp(), d.record_id),
            )
        out["recorded" if cur.rowcount else "unchanged"] += 1
        count = self.absences(d.student_id, d.school_year)
        alerted = {
            t
            for (t,) in self.conn.execute(
                "SELECT tier FROM tier_alerts WHERE student_id=? AND school_year=?", (d.student_id, d.school_year)
            )
        }
        # a campaign that asks for it alerts a tier again after the count fell below it
        below = [name for m, name, realert in self.tiers if realert and count < m and name in alerted]
        if below:
            with self.conn:
                self.conn.executemany(
                    "DELETE FROM tier_alerts WHERE student_id=? AND school_year=? AND tier=?",
                    [(d.student_id, d.school_year, n) for n in below],
                )
            alerted -= set(below)
        crossed = [(m, name) for m, name, _ in self.tiers if count >= m and name not in alerted]
        if not crossed:
            return out
        top_min, top = crossed[-1]
        raw = make_event(
            "attendance.absence-threshold",
            {
                "student_id": d.student_id,
                "school_id": d.school_id,
                "absences": count,
                "tier": top,
                "school_year": d.school_year,
                "as_of": d.date.isoformat(),
                **({"learning_mode": d.learning_mode} if d.learning_mode else {}),
            },
            id=f"absence-{d.student_id}-{d.school_year}-{top}-{hashlib.sha256(event.uid.encode()).hexdigest()[:8]}",
            source=SOURCE,
            time=event.time.isoformat(),
        )
        self.bus.publish(self.topic, raw, key=f"student:{d.student_id}")
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO tier_alerts VALUES (?, ?, ?, ?, ?)",
                [(d.student_id, d.school_year, name, count, int(name == top)) for _, name in crossed],
            )
        out["threshold_published"] += 1
        out["tiers_passed_silently"] += len(crossed) - 1
        return out

    def close(self) -> None:
        self.conn.close()
