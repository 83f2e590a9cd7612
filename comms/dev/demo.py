"""The events of the two seed press releases (shared/seeds/), as the district's systems would send them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from comms.events import make_event

DEMO_NOW = dt.datetime(2020, 11, 20, 12, 0, tzinfo=ZoneInfo("America/New_York"))

SOURCE_IT = "https://dadeschools.net/it/learning-platforms"
SOURCE_FOOD = "https://dadeschools.net/food-nutrition"
SOURCE_SIS = "https://dadeschools.net/sis/attendance"


def demo_events() -> list[bytes]:
    events = [
        # September 2, 2020, evening: "Beginning tomorrow, September 3, all students in grades 6-12 will
        # utilize Microsoft Teams ... By September 11, the District will make a determination ..."
        make_event(
            "platform.switch",
            {
                "grades": ["06", "07", "08", "09", "10", "11", "12"],
                "from_platform": "K12 (My School Online)",
                "to_platform": "Microsoft Teams",
                "effective_date": "2020-09-03",
                "reason": "cyberattack",
                # the seed's words, and the district's languages for them; the seeds hold no URL for
                # instructions, so the demo event carries none ("as determined by each school and teacher")
                "reason_detail": {
                    "en": "Connectivity problems with My School Online in the first days of distance learning "
                    "were combined with Distributed Denial-of-Service cyberattacks.",
                    "es": "Los problemas de conexión con My School Online en los primeros días de la educación a "
                    "distancia se combinaron con ciberataques de denegación de servicio distribuido (DDoS).",
                    "ht": "Pwoblèm koneksyon ak My School Online nan premye jou aprantisaj a distans yo te vin "
                    "ansanm ak atak sou entènèt ki rele DDoS (Distributed Denial-of-Service).",
                },
                "review_date": "2020-09-11",
                # "Students in grades Pre-K-5 will continue to use the K12 platform for Class Connect
                # sessions and coursework."
                "unchanged": [
                    {
                        "grades": ["PK", "KG", "01", "02", "03", "04", "05"],
                        "platform": "K12",
                        "use": {
                            "en": "Class Connect sessions and coursework",
                            "es": "las sesiones de Class Connect y las tareas del curso",
                            "ht": "sesyon Class Connect yo ak travay kou yo",
                        },
                    }
                ],
            },
            id="platform-switch-2020-09-03",
            source=SOURCE_IT,
            time="2020-09-02T22:00:00-04:00",
        ),
        # USDA waiver: free breakfast and lunch for all children through December 31, 2020;
        # grab-and-go Tuesdays and Thursdays, 4 p.m. to 6 p.m., at all school sites.
        make_event(
            "meals.schedule",
            {
                "meals": ["breakfast", "lunch"],
                "days": ["tuesday", "thursday"],
                "start_time": "16:00",
                "end_time": "18:00",
                "sites": "all",
                "effective_from": "2020-09-01",
                "effective_until": "2020-12-31",
                "eligibility": "all_children_under_18",
                "program": {
                    "en": "USDA summer meals flexibility waiver",
                    "es": "exención de flexibilidad de las comidas de verano del USDA",
                    "ht": "dispans USDA pou fleksibilite manje ete a",
                },
            },
            id="meals-2020-09-01",
            source=SOURCE_FOOD,
            time="2020-09-01T12:00:00-04:00",
        ),
    ]
    # #ShowUpMDCPS (November 20, 2020): five absences, more than five, more than ten. The district's
    # student information system sends daily attendance; the attendance consumer counts it and
    # announces each tier as a student crosses it.
    events += attendance_stream()
    return events


# (student, school, absences among the school days before November 20, learning mode)
ATTENDANCE = [
    ("S1001", "6001", 5, "online"),  # Mateo: five absences, school-wide programming
    ("S1005", "5002", 7, "online"),  # Jean: more than five, targeted interventions
    ("S1007", "7001", 11, "schoolhouse"),  # Isabella: more than ten, intensive interventions
    ("S1010", "7001", 5, "online"),  # Wisly: five absences
]


def attendance_stream(students: list[tuple[str, str]] | None = None) -> list[bytes]:
    """The demo's attendance records; `students` (id, school) replaces the fixture's four students."""
    plan = (
        ATTENDANCE
        if students is None
        else [
            (sid, school, absences, mode)
            for (sid, school), (_, _, absences, mode) in zip(students, ATTENDANCE, strict=False)
        ]
    )
    out = []
    for sid, school, absences, mode in plan:
        # the last school days before the campaign's launch on November 20 (a few present days at the end)
        for n, day in enumerate(reversed(school_days(dt.date(2020, 11, 19), absences + 3, step=-1))):
            category = "unexcused" if n < absences else "present"
            out.append(
                make_event(
                    "attendance.recorded",
                    {
                        "record_id": f"{sid}-{day}",
                        "student_id": sid,
                        "school_id": school,
                        "date": day.isoformat(),
                        "category": category,
                        "school_year": "2020-2021",
                        "learning_mode": mode,
                    },
                    id=f"attendance-{sid}-{day}",
                    source=SOURCE_SIS,
                    time=f"{day}T18:30:00-04:00",
                )
            )
    return out


def school_days(first: dt.date, n: int, step: int = 1) -> list[dt.date]:
    """`n` weekdays from `first` on (`step=-1`: back from it), in the order walked: attendance is
    taken on school days only."""
    out: list[dt.date] = []
    day = first
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=step)
    return out


def phases(events: list[bytes]) -> list[tuple[dt.datetime, list[bytes]]]:
    """The demo's events in the order the district sent them, each group with the clock it runs at:
    the meals and the platform switch at their own time (their news is past by November: they would
    be `expired`), the attendance stream on November 20, the campaign's launch."""
    from comms.events import parse_event

    out: list[tuple[dt.datetime, list[bytes]]] = []
    for raw in events:
        e = parse_event(raw)
        at = DEMO_NOW if e.type == "attendance.recorded" else e.time.astimezone(DEMO_NOW.tzinfo)
        if out and out[-1][0] == at:
            out[-1][1].append(raw)
        else:
            out.append((at, [raw]))
    return sorted(out, key=lambda p: p[0])


def sample_events() -> list[bytes]:
    """One event of each type a campaign reacts to, for `comms validate` and `comms preview`."""
    threshold = make_event(
        "attendance.absence-threshold",
        {
            "student_id": "S1005",
            "school_id": "5002",
            "absences": 6,
            "tier": "targeted",
            "school_year": "2020-2021",
            "as_of": "2020-10-06",
            "learning_mode": "online",
        },
        id="sample-absence-threshold",
        source=SOURCE_SIS,
        time="2020-11-20T18:30:00-05:00",
    )
    return [*demo_events()[:2], threshold]


def ungated(config: Path, folder: Path) -> Path:
    """A copy of `config` in `folder` with every campaign at `approval: none`: for the tests and the
    benchmark of the send path, which send at once (the approval gate has tests of its own)."""
    import yaml

    doc = yaml.safe_load(config.read_text("utf-8"))
    for c in doc["campaigns"].values():
        c["approval"] = "none"
    path = folder / "campaigns.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")
    return path


if __name__ == "__main__":
    # the two seed releases' events as JSON Lines, for `comms publish -` (README: "The console")
    import sys

    for raw in demo_events()[:2]:
        sys.stdout.write(raw.decode("utf-8") + "\n")
