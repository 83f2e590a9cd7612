"""`comms effect CAMPAIGN`: do the campaign's messages change attendance? Its randomized hold-out
(`holdout` in campaigns.yaml) answers it, from the attendance stream the attendance consumer keeps.

Each student in the hold-out was assigned an arm the day their first message went, or would have gone
(the ledger's `holdout` table: arm, tier, day). The outcome is the student's absences per school day
over the N school days recorded after that day. The estimate compares the arms' means, as randomized
(intention to treat: a treated family whose text bounced still counts as treated):

    difference = mean(treated) - mean(control)
    SE         = sqrt(s_t^2 / n_t + s_c^2 / n_c)      (Welch: each arm its own variance)
    95% CI     = difference +/- 1.96 * SE             (normal approximation)

The normal approximation wants a few dozen students per arm: below `min_arm` in either, the report
says the sample is too small to tell, and gives no interval. A student with fewer than N school days
recorded since their day is not counted yet (still in follow-up, or left the district).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from comms.roster import Roster
from comms.store import SqliteFile

Z95 = 1.959964  # the standard normal's 97.5th percentile
ABSENT = frozenset({"excused", "unexcused"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Followed:
    """One hold-out student's attendance over the follow-up."""

    student: str
    arm: str  # treated / control
    tier: str | None
    lang: str | None
    days: int
    absences: int

    @property
    def rate(self) -> float:
        return self.absences / self.days


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    group: str  # "all", "tier schoolwide", "language es"
    n_treated: int
    n_control: int
    treated: float | None  # mean absences per school day
    control: float | None
    difference: float | None  # treated - control: below 0, fewer absences with the messages
    low: float | None  # the 95% confidence interval of the difference
    high: float | None
    verdict: str


def estimate(group: str, followed: Iterable[Followed], min_arm: int = 30) -> Estimate:
    """The difference in absences per school day between the arms, with its 95% interval."""
    rates: dict[str, list[float]] = {"treated": [], "control": []}
    for f in followed:
        rates[f.arm].append(f.rate)
    t, c = rates["treated"], rates["control"]
    mt = statistics.fmean(t) if t else None
    mc = statistics.fmean(c) if c else None
    diff = low = high = None
    if len(t) < max(min_arm, 2) or len(c) < max(min_arm, 2) or mt is None or mc is None:
        verdict = f"too small to tell: fewer than {min_arm} students in an arm"
    else:
        diff = mt - mc
        se = math.sqrt(statistics.variance(t) / len(t) + statistics.variance(c) / len(c))
        low, high = diff - Z95 * se, diff + Z95 * se
        relative = f" ({diff / mc:+.0%} of the control group's rate)" if mc else ""
        if high < 0:
            verdict = f"fewer absences with the messages{relative}"
        elif low > 0:
            verdict = f"more absences with the messages{relative}"
        else:
            verdict = "no difference the data can tell from chance: the interval includes 0"
    return Estimate(
        group=group,
        n_treated=len(t),
        n_control=len(c),
        treated=mt,
        control=mc,
        difference=diff,
        low=low,
        high=high,
        verdict=verdict,
    )


def follow(
    assignments: Sequence[tuple[str, str, str | None, str | None]],
    days_of: Mapping[str, Sequence[tuple[str, str]]],
    languages: Mapping[str, str],
    days: int,
) -> tuple[list[Followed], int]:
    """(each assigned student's follow-up, how many have fewer than `days` school days recorded after
    their day). `days_of`: student -> (date, category) of every recorded school day, in date order."""
    out, short = [], 0
    for student, arm, tier, since in assignments:
        after = [cat for date, cat in days_of.get(student, ()) if since is not None and date > since][:days]
        if len(after) < days:
            short += 1
            continue
        absences = sum(1 for cat in after if cat in ABSENT)
        out.append(
            Followed(student=student, arm=arm, tier=tier, lang=languages.get(student), days=days, absences=absences)
        )
    return out, short


def report(followed: Sequence[Followed], min_arm: int = 30) -> list[Estimate]:
    """The estimate for all students, then per tier and per language."""
    out = [estimate("all", followed, min_arm)]
    for label, key in (("tier", "tier"), ("language", "lang")):
        groups: dict[str, list[Followed]] = defaultdict(list)
        for f in followed:
            groups[str(getattr(f, key) or "?")].append(f)
        out += [estimate(f"{label} {name}", groups[name], min_arm) for name in sorted(groups)]
    return out


def attendance_days(path: Path, students: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """student -> (date, category) of each school day the attendance consumer recorded, in date order."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if not path.exists():  # no attendance recorded yet
        return out
    store = SqliteFile(path, "attendance counts")
    conn = store.open(synchronous="NORMAL")
    try:
        with store.errors("cannot read attendance"):
            wanted = list(students)
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                rows = conn.execute(
                    "SELECT student_id, date, category FROM attendance WHERE student_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY student_id, date",
                    chunk,
                )
                for student, date, category in rows:
                    out[student].append((date, category))
    finally:
        conn.close()
    return out


def measure(
    assigned: Sequence[tuple[str, str, str | None, str | None]], roster: Roster, attendance: Path, days: int
) -> tuple[list[Followed], int]:
    """Each assigned student's follow-up from the attendance store (`attendance.db`), in their family's
    language (the first guardian's in the roster), and how many are not followed yet."""
    languages = {}
    for student, *_ in assigned:
        st = roster.students.get(student)
        guardian = roster.guardians.get(st.guardians[0]) if st and st.guardians else None
        if guardian is not None:
            languages[student] = guardian.language
    return follow(assigned, attendance_days(attendance, [a[0] for a in assigned]), languages, days)
