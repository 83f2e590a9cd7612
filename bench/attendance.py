"""Attendance records/s through the attendance consumer, and `comms effect` at scale. On demand:

    .venv/bin/python bench/attendance.py [--students 5000] [--days 20] [--runs 3]

- counter: `--days` school days of records for `--students` students (a day's SIS upload at a time,
  as a district publishes them), through the SQLite bus into the attendance consumer until idle:
  records/s, and the tier events it published;
- effect: the estimate over `--students` hold-out students followed for 20 school days (the ledger's
  assignments and the attendance store read, the report computed): seconds.

Self-contained (no comms.dev.trial), so the same script measures an older commit:
`PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/attendance.py`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import comms
from comms.app import App, Env
from comms.dev.demo import school_days, ungated
from comms.events import make_event
from comms.roster import synthetic_roster
from comms.worker import run

ROOT = Path(comms.__file__).resolve().parent.parent  # the checkout measured: its campaigns.yaml and templates
MIAMI = ZoneInfo("America/New_York")


def records(schools: dict[str, str], day: dt.date, rng: random.Random) -> list[bytes]:
    out = []
    for student, school in schools.items():
        category = "present" if rng.random() > 0.3 else "unexcused"
        out.append(
            make_event(
                "attendance.recorded",
                {
                    "record_id": f"{student}-{day}",
                    "student_id": student,
                    "school_id": school,
                    "date": day.isoformat(),
                    "category": category,
                    "school_year": "2020-2021",
                },
                id=f"bench-{student}-{day}",
                source="bench/attendance",
                time=dt.datetime.combine(day, dt.time(20), tzinfo=dt.UTC).isoformat(),
            )
        )
    return out


def counter(students: int, days: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        roster = synthetic_roster(folder / "roster.json", students)
        schools = {s["id"]: s["school_id"] for s in json.loads(roster.read_text("utf-8"))["students"]}
        env = Env.from_environ(
            {
                "COMMS_VAR": str(folder / "var"),
                "COMMS_OUT": str(folder / "out"),
                "COMMS_CONFIG": str(ungated(ROOT / "campaigns.yaml", folder)),
                "COMMS_TEMPLATES": str(ROOT / "templates"),
                "COMMS_ROSTER": str(roster),
            }
        )
        rng = random.Random(1)
        uploads = [records(schools, d, rng) for d in school_days(dt.date(2020, 9, 8), days)]
        clock = [dt.datetime(2020, 9, 8, 20, tzinfo=MIAMI)]
        app = App.open(env, clock=lambda: clock[0], environ={})
        workers = app.workers(["attendance"])
        elapsed = 0.0
        for day, upload in zip(school_days(dt.date(2020, 9, 8), days), uploads, strict=True):
            clock[0] = dt.datetime.combine(day, dt.time(20), tzinfo=MIAMI)
            app.bus.publish_many(env.topic, [(None, r) for r in upload])
            t = time.perf_counter()
            run(workers, until_idle=True)
            elapsed += time.perf_counter() - t
        published = workers[0].stats["threshold_published"]
        workers[0].close()
        app.close()
        return elapsed, published


def effect(students: int) -> float | None:
    try:
        from comms.effect import Followed, report
    except ImportError:  # a commit before `comms effect`
        return None
    rng = random.Random(2)
    rows = [
        Followed(
            student=f"S{i}",
            arm="control" if i % 10 == 0 else "treated",
            tier=("schoolwide", "targeted", "intensive")[i % 3],
            lang=("en", "es", "ht")[i % 3],
            days=20,
            absences=sum(rng.random() < 0.3 for _ in range(20)),
        )
        for i in range(students)
    ]
    t = time.perf_counter()
    report(rows)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=5000)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    print(f"python {platform.python_version()}, {a.students:,} students x {a.days} school days")
    rates = []
    for _ in range(a.runs):
        seconds, published = counter(a.students, a.days)
        n = a.students * a.days
        rates.append(n / seconds)
        print(f"counter: {n:,} records in {seconds:.2f} s = {n / seconds:,.0f} records/s, {published:,} tier events")
    print(f"counter median: {statistics.median(rates):,.0f} records/s")
    t = effect(300_000)
    print("effect: not in this commit" if t is None else f"effect: report over 300,000 followed students in {t:.2f} s")


if __name__ == "__main__":
    main()
