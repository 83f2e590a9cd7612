"""Raw attendance into #ShowUpMDCPS threshold events: counted from real records, once per tier."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

from comms.app import App, Env
from comms.dev.demo import DEMO_NOW, school_days
from comms.events import make_event
from comms.worker import run
from tests.conftest import ROOT, UNGATED

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


def flow(tmp_path: Path, events: list[bytes], config: Path | None = None) -> tuple[list[dict], list[str]]:
    """Run every consumer until idle; return the threshold events published and the SMS texts sent."""
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(config or UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
        }
    )
    app = App.open(env, clock=lambda: DEMO_NOW, environ={})
    app.bus.publish_many(env.topic, [(f"student:{STUDENT}", e) for e in events])
    workers = app.workers()
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    with app.bus.consumer("inspect", [env.topic]) as c:
        docs = [json.loads(r.value) for r in c.poll(max_records=10_000, timeout=0.5)]
    app.close()
    thresholds = [d for d in docs if d["type"] == "attendance.absence-threshold"]
    sms = [p.read_text("utf-8") for p in sorted((tmp_path / "out" / "outbox" / "sms").glob("*.txt"))]
    return thresholds, sms


def test_five_absences_cross_the_first_tier_once(tmp_path: Path) -> None:
    events = [record(d, "unexcused") for d in DAYS[:5]] + [record(DAYS[5], "present"), record(DAYS[6], "tardy")]
    thresholds, sms = flow(tmp_path, events)
    assert [(t["data"]["tier"], t["data"]["absences"]) for t in thresholds] == [("schoolwide", 5)]
    assert len(sms) == 1 and "Mateo tiene 5 ausencias" in sms[0]  # to María, in Spanish


def test_duplicates_and_out_of_order_days_count_once(tmp_path: Path) -> None:
    events = [record(d, "excused" if i % 2 else "unexcused") for i, d in enumerate(DAYS[:7])]
    events = events + events[:4]  # the SIS sent some twice
    random.Random(3).shuffle(events)
    thresholds, _ = flow(tmp_path, events)
    assert [t["data"]["tier"] for t in thresholds] == ["schoolwide", "targeted"]  # 5, then more than five
    assert thresholds[-1]["data"]["absences"] == 6  # announced when it was crossed


def test_a_correction_lowers_the_count_and_does_not_realert(tmp_path: Path) -> None:
    events = [record(d, "unexcused") for d in DAYS[:5]]
    events.append(record(DAYS[0], "present", at=60))  # the first absence was a mistake: 4 now
    events.append(record(DAYS[0], "unexcused", at=-60))  # an older version of that day arrives late: ignored
    events.append(record(DAYS[5], "unexcused"))  # 5 again: the same tier is not announced twice
    thresholds, sms = flow(tmp_path, events)
    assert [t["data"]["tier"] for t in thresholds] == ["schoolwide"] and len(sms) == 1


def test_realert_when_the_campaign_asks(tmp_path: Path) -> None:
    cfg = tmp_path / "campaigns.yaml"
    cfg.write_text(
        (ROOT / "campaigns.yaml")
        .read_text("utf-8")
        .replace('    hashtag: "#ShowUpMDCPS"', '    hashtag: "#ShowUpMDCPS"\n    realert: true'),
        "utf-8",
    )
    events = [record(d, "unexcused") for d in DAYS[:5]]
    events += [record(DAYS[0], "present", at=60), record(DAYS[5], "unexcused")]
    thresholds, _ = flow(tmp_path, events, cfg)
    assert [t["data"]["tier"] for t in thresholds] == ["schoolwide", "schoolwide"]


def test_eleven_absences_announce_each_tier_once_in_turn(tmp_path: Path) -> None:
    thresholds, sms = flow(tmp_path, [record(d, "unexcused") for d in DAYS[:11]])
    assert [(t["data"]["tier"], t["data"]["absences"]) for t in thresholds] == [
        ("schoolwide", 5),
        ("targeted", 6),
        ("intensive", 11),
    ]
    assert len(sms) == 3


def test_unknown_student_is_dead_lettered(tmp_path: Path) -> None:
    thresholds, _ = flow(tmp_path, [record(DAYS[0], "unexcused", student="S9999")])
    assert thresholds == []
