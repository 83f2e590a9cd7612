"""A synthetic attendance stream with a known effect, to check `comms effect` (dev tooling: no real
student's attendance is in it).

Each student has their own chance of missing a day, drawn once from a Beta distribution around `mean`
(some students miss far more than others, as in a real school); each school day is an independent
draw. With `effect`, the students in `treated` miss days at (1 - effect) times their chance from the
day after their message day on: the true effect is known, so an estimate can be held against it.
Everything is seeded: the same seed, students and days give the same stream.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

from comms.events import make_event

SOURCE = "district-comms/dev/trial"
SPREAD = 4.0  # Beta(a, b) with a + b = SPREAD: wide differences between students


def propensity(seed: int, student: str, mean: float) -> float:
    """The student's own chance of missing a school day (before any effect)."""
    return random.Random(f"{seed}:{student}").betavariate(mean * SPREAD, (1 - mean) * SPREAD)


def attendance_stream(
    students: Mapping[str, str],
    days: Sequence[dt.date],
    *,
    school_year: str,
    seed: int,
    mean: float,
    effect: float = 0.0,
    treated: Mapping[str, dt.date] = MappingProxyType({}),
) -> Iterator[bytes]:
    """`attendance.recorded` events, day by day, for `students` (student -> school); `treated`:
    student -> the day their message went."""
    for day in days:
        for student, school in students.items():
            since = treated.get(student)
            p = propensity(seed, student, mean) * ((1 - effect) if since is not None and day > since else 1.0)
            draw = random.Random(f"{seed}:{student}:{day.isoformat()}").random()
            category = "present" if draw >= p else ("unexcused" if draw < p / 2 else "excused")
            yield make_event(
                "attendance.recorded",
                {
                    "record_id": f"{student}-{day.isoformat()}",
                    "student_id": student,
                    "school_id": school,
                    "date": day.isoformat(),
                    "category": category,
                    "school_year": school_year,
                },
                id=f"trial-{seed}-{student}-{day.isoformat()}",
                source=SOURCE,
                time=dt.datetime.combine(day, dt.time(16), tzinfo=dt.UTC).isoformat(),
            )


def expected_difference(arms: Mapping[str, str], *, seed: int, mean: float, effect: float) -> tuple[float, float]:
    """(the true average effect on the trial's students, in absences per school day: -effect times
    their average chance of missing a day; that average chance, which the control arm estimates):
    what an unbiased estimate of treated - control is centred on."""
    chance = statistics.fmean(propensity(seed, s, mean) for s in arms)
    return -effect * chance, chance
