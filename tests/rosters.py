"""Generated rosters in the fixture format, for tests that need more families than the fixture has."""

from __future__ import annotations

import json
from pathlib import Path

from comms.roster import FIXTURE

GRADES = ("06", "07", "08", "09", "10", "11", "12")
SCHOOL_FOR = {"06": "6001", "07": "6001", "08": "6001"}  # the rest at the senior high


def write_roster(path: Path, families: int, *, sms_consent: bool = True) -> Path:
    """`families` guardians, each with one student in grades 6-12, languages en/es/ht in turn."""
    fixture = json.loads(FIXTURE.read_text("utf-8"))
    students, guardians = [], []
    for i in range(families):
        grade = GRADES[i % len(GRADES)]
        students.append(
            {
                "id": f"T{i:06d}",
                "first_name": f"Student{i}",
                "grade": grade,
                "school_id": SCHOOL_FOR.get(grade, "7001"),
                "guardians": [f"H{i:06d}"],
            }
        )
        guardians.append(
            {
                "id": f"H{i:06d}",
                "first_name": f"Parent{i}",
                "language": ("en", "es", "ht")[i % 3],
                "phone": f"+1786{i:07d}",
                "email": f"parent{i}@example.org",
                "sms_consent": sms_consent,
                "email_consent": True,
            }
        )
    path.write_text(json.dumps({"schools": fixture["schools"], "students": students, "guardians": guardians}), "utf-8")
    return path
