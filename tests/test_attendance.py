"""Raw attendance into #ShowUpMDCPS threshold events: counted from real records, once per tier."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

from comms.app import App, Env
from comms.dev.demo import DEMO_NOW, school_days
from comms.events import make_event
from comms.ledger import Ledger
from comms.worker import run
from tests.conftest import MIAMI, ROOT, UNGATED, Clock

STUDENT, SCHOOL = "S1001", "6001"  # Mateo, South Miami Middle; guardian G01 reads Spanish
DAYS = school_days(dt.date(2020, 11, 9), 40)  # the clock (DEMO_NOW) is November 20: news still fresh


def record(day: dt.date, category: str, *, at: int = 0, student: str = STUDENT, school: str = SCHOOL) -> bytes:
    t = dt.datetime(2020, 11, 9, 18, tzinfo=dt.UTC) + dt.timedelta(days=(day - DAYS[0]).days, minutes=at)
    return make_event(
        "attendance.recorded",
        {
            "record_id": f"{student}-{day}-{at}",
            "student_id": student,
            "school_id": school,
            "date": day.isoformat(),
            "category": category,
            "school_year": "2020-2021",
            "learning_mode": "online",
        },
        id=f"rec-{student}-{day}-{at}",
        source="https://dadeschools.net/sis/attendance",
        time=t.isoformat(),
    )


def flow(
    tmp_path: Path, *batches: list[bytes], config: Path | None = None, clock: Clock | None = None
) -> tuple[list[dict], list[str]]:
    """Publish each batch and run every consumer until idle (one batch: the records the attendance
    consumer takes at once); return the threshold events published and the SMS texts sent."""
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(config or UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
        }
    )
    app = App.open(env, clock=clock or (lambda: DEMO_NOW), environ={})
    workers = app.workers()
    for batch in batches or ([],):  # none: only what is due
        app.bus.publish_many(env.topic, [(f"student:{STUDENT}", e) for e in batch])
        run(workers, until_idle=True)
    for w in workers:
        w.close()
    with app.bus.consumer("inspect", [env.topic]) as c:
        docs = [json.loads(r.value) for r in c.poll(max_records=10_000, timeout=0.5)]
    app.close()
    thresholds = [d for d in docs if d["type"] == "attendance.absence-threshold"]
    sms = [p.read_text("utf-8") for p in sorted((tmp_path / "out" / "outbox" / "sms").glob("*.txt"))]
    return thresholds, sms


def tiers(thresholds: list[dict]) -> list[tuple[str, int, str | None]]:
    return [(t["data"]["tier"], t["data"]["absences"], t["data"].get("superseded_by")) for t in thresholds]


def test_five_absences_cross_the_first_tier_once(tmp_path: Path) -> None:
    events = [record(d, "unexcused") for d in DAYS[:5]] + [record(DAYS[5], "present"), record(DAYS[6], "tardy")]
    thresholds, sms = flow(tmp_path, events)
    assert tiers(thresholds) == [("schoolwide", 5, None)]
    assert thresholds[0]["data"]["as_of"] == DAYS[6].isoformat()  # the last school day recorded
    assert len(sms) == 1 and "Mateo tiene 5 ausencias" in sms[0]  # to María, in Spanish


def test_duplicates_and_out_of_order_days_count_once(tmp_path: Path) -> None:
    events = [record(d, "excused" if i % 2 else "unexcused") for i, d in enumerate(DAYS[:7])]
    events = events + events[:4]  # the SIS sent some twice
    random.Random(3).shuffle(events)
    thresholds, sms = flow(tmp_path, events)
    # one batch: 7 absences cross both tiers at once; the family hears of the higher one only
    assert tiers(thresholds) == [("schoolwide", 7, "targeted"), ("targeted", 7, None)]
    assert len(sms) == 1 and "Mateo tiene 7 ausencias" in sms[0]


def test_a_correction_lowers_the_count_and_does_not_realert(tmp_path: Path) -> None:
    first = [record(d, "unexcused") for d in DAYS[:5]]
    later = [
        record(DAYS[0], "present", at=60),  # the first absence was a mistake: 4 now
        record(DAYS[0], "unexcused", at=-60),  # an older version of that day arrives late: ignored
        record(DAYS[5], "unexcused"),  # 5 again: the same tier is not announced twice
    ]
    thresholds, sms = flow(tmp_path, first, later)
    assert [t["data"]["tier"] for t in thresholds] == ["schoolwide"] and len(sms) == 1


def test_realert_when_the_campaign_asks(tmp_path: Path) -> None:
    cfg = tmp_path / "campaigns.yaml"
    cfg.write_text(
        (ROOT / "campaigns.yaml")
        .read_text("utf-8")
        .replace('    hashtag: "#ShowUpMDCPS"', '    hashtag: "#ShowUpMDCPS"\n    realert: true'),
        "utf-8",
    )
    first = [record(d, "unexcused") for d in DAYS[:5]]
    thresholds, _ = flow(
        tmp_path, first, [record(DAYS[0], "present", at=60)], [record(DAYS[5], "unexcused")], config=cfg
    )
    assert [t["data"]["tier"] for t in thresholds] == ["schoolwide", "schoolwide"]


def test_eleven_absences_day_by_day_announce_each_tier_once_in_turn(tmp_path: Path) -> None:
    thresholds, sms = flow(tmp_path, *[[record(d, "unexcused")] for d in DAYS[:11]])
    assert tiers(thresholds) == [("schoolwide", 5, None), ("targeted", 6, None), ("intensive", 11, None)]
    assert len(sms) == 3
    # the intensive notice names the earlier ones: any of them still held would not be sent
    assert len(thresholds[-1]["data"]["earlier"]) == 2


def test_eleven_absences_in_one_batch_send_only_the_intensive_notice(tmp_path: Path) -> None:
    """A backfill: the family gets the notice that matters most, the others are `superseded`."""
    thresholds, sms = flow(tmp_path, [record(d, "unexcused") for d in DAYS[:11]])
    assert tiers(thresholds) == [
        ("schoolwide", 11, "intensive"),
        ("targeted", 11, "intensive"),
        ("intensive", 11, None),
    ]
    assert len(sms) == 1 and "Mateo tiene 11 ausencias" in sms[0]
    ledger = Ledger(tmp_path / "var" / "ledger.db")
    details = ledger.details("show-up")
    ledger.close()
    superseded = {(ch, why): n for ch, state, why, n in details if state == "superseded"}
    assert superseded == {
        ("sms", "superseded: tier intensive crossed at the same time (11 absences)"): 2,
        ("email", "superseded: tier intensive crossed at the same time (11 absences)"): 2,
    }


def test_a_higher_tier_supersedes_a_notice_still_held_for_the_morning(tmp_path: Path) -> None:
    """At night the schoolwide notice waits for quiet hours to end; the next batch crosses the next tier
    before it went: only the targeted notice goes in the morning."""
    night = Clock(dt.datetime(2020, 11, 19, 23, 0, tzinfo=MIAMI))
    five = [record(d, "unexcused") for d in DAYS[:5]]
    thresholds, sms = flow(tmp_path, five, [record(DAYS[5], "unexcused")], clock=night)
    assert tiers(thresholds) == [("schoolwide", 5, None), ("targeted", 6, None)] and sms == []
    night.now = dt.datetime(2020, 11, 20, 8, 0, tzinfo=MIAMI)
    _, sms = flow(tmp_path, clock=night)
    assert len(sms) == 1 and "Mateo tiene 6 ausencias" in sms[0]
    ledger = Ledger(tmp_path / "var" / "ledger.db")
    states = {(ch, st): n for _, ch, _, st, n in ledger.counts("show-up")}
    ledger.close()
    assert states[("sms", "superseded")] == 1 and states[("sms", "sent")] == 1


def test_unknown_student_is_dead_lettered(tmp_path: Path) -> None:
    thresholds, _ = flow(tmp_path, [record(DAYS[0], "unexcused", student="S9999")])
    assert thresholds == []


def test_a_store_from_before_earlier_is_upgraded_and_keeps_its_alerts(tmp_path: Path) -> None:
    """An attendance store whose tier alerts name no event (before `earlier`): opened, it gains the
    column, the tier already announced is not announced again, and the next one names no earlier id."""
    import sqlite3

    db = tmp_path / "var" / "attendance.db"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE tier_alerts (student_id TEXT NOT NULL, school_year TEXT NOT NULL, tier TEXT NOT NULL,"
            " absences INTEGER NOT NULL, sent INTEGER NOT NULL, PRIMARY KEY (student_id, school_year, tier));"
            f"INSERT INTO tier_alerts VALUES ('{STUDENT}', '2020-2021', 'schoolwide', 5, 1);"
        )
    conn.close()
    thresholds, sms = flow(tmp_path, [record(d, "unexcused") for d in DAYS[:6]])
    assert tiers(thresholds) == [("targeted", 6, None)] and "earlier" not in thresholds[0]["data"]
    assert len(sms) == 1
