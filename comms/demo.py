"""The events of the two seed press releases (shared/seeds/), as the district's systems would send them."""

from __future__ import annotations

import datetime as dt
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
                "reason_detail": "Connectivity problems with My School Online in the first days of distance "
                "learning were combined with Distributed Denial-of-Service cyberattacks.",
                "review_date": "2020-09-11",
                "instructions_url": "https://www.dadeschools.net/teams",
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
                "program": "USDA summer meals flexibility waiver",
            },
            id="meals-2020-09-01",
            source=SOURCE_FOOD,
            time="2020-09-01T12:00:00-04:00",
        ),
    ]
    # #ShowUpMDCPS (November 20, 2020): five absences, more than five, more than ten.
    for sid, school, absences, tier, mode in [
        ("S1001", "6001", 5, "schoolwide", "online"),
        ("S1005", "5002", 7, "targeted", "online"),
        ("S1007", "7001", 11, "intensive", "schoolhouse"),
        ("S1010", "7001", 5, "schoolwide", "online"),
    ]:
        events.append(
            make_event(
                "attendance.absence-threshold",
                {
                    "student_id": sid,
                    "school_id": school,
                    "absences": absences,
                    "tier": tier,
                    "school_year": "2020-2021",
                    "as_of": "2020-11-20",
                    "learning_mode": mode,
                },
                id=f"absence-{sid}-{tier}-2020-2021",
                source=SOURCE_SIS,
                time="2020-11-20T18:30:00-05:00",
            )
        )
    return events
