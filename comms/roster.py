"""Who the district's families are, and which of them an event concerns.

A small fixture roster (comms/fixtures/roster.json) stands in until the OneRoster import lands.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from comms.config import Campaign
from comms.errors import ConfigError, EventValidationError
from comms.events import AbsenceThreshold, AttendanceRecorded, Event, MealsSchedule, PlatformSwitch

FIXTURE = Path(__file__).parent / "fixtures" / "roster.json"


@dataclass(frozen=True, slots=True)
class School:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Student:
    id: str
    first_name: str
    grade: str
    school_id: str
    guardians: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Guardian:
    id: str
    first_name: str
    language: str
    phone: str | None
    email: str | None
    sms_consent: bool = False
    email_consent: bool = False
    no_contact: bool = False


@dataclass(frozen=True, slots=True)
class Recipient:
    """One message's worth of audience: a guardian and the children the message is about."""

    key: str  # what the ledger counts as "once": the guardian, or the guardian and one child
    guardian: Guardian
    students: tuple[Student, ...] = field(default=())


class Roster:
    def __init__(
        self,
        schools: dict[str, School],
        students: dict[str, Student],
        guardians: dict[str, Guardian],
        synthetic: bool = False,
    ) -> None:
        self.schools, self.students, self.guardians = schools, students, guardians
        self.synthetic = synthetic  # generated data: its numbers may be real people's

    @classmethod
    def load(cls, path: str | Path = FIXTURE) -> Roster:
        """A roster database written by `comms roster import` (*.db), or a JSON file like the fixture."""
        if str(path).endswith(".db"):
            return cls._load_db(Path(path))
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            schools = {s["id"]: School(s["id"], s["name"]) for s in doc["schools"]}
            students = {
                s["id"]: Student(s["id"], s["first_name"], s["grade"], s["school_id"], tuple(s["guardians"]))
                for s in doc["students"]
            }
            guardians = {
                g["id"]: Guardian(
                    g["id"],
                    g["first_name"],
                    g["language"],
                    g.get("phone"),
                    g.get("email"),
                    g.get("sms_consent", False),
                    g.get("email_consent", False),
                    g.get("no_contact", False),
                )
                for g in doc["guardians"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"roster {path}: {exc.__class__.__name__}: {exc}") from None
        return cls(schools, students, guardians)

    @classmethod
    def _load_db(cls, path: Path) -> Roster:
        if not path.exists():
            raise ConfigError(f"roster {path} does not exist: run `comms roster import DIR` first")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            schools = {i: School(i, n) for i, n in conn.execute("SELECT id, name FROM schools")}
            links: dict[str, list[str]] = {}
            for sid, gid in conn.execute("SELECT student_id, guardian_id FROM links ORDER BY 1, 2"):
                links.setdefault(sid, []).append(gid)
            students = {
                i: Student(i, n, g, sc, tuple(links.get(i, ())))
                for i, n, g, sc in conn.execute("SELECT id, first_name, grade, school_id FROM students")
            }
            synthetic = bool(conn.execute("SELECT count(*) FROM guardians WHERE synthetic").fetchone()[0])
            guardians = {
                r[0]: Guardian(r[0], r[1], r[2], r[3], r[4], bool(r[5]), bool(r[6]), bool(r[7]))
                for r in conn.execute(
                    "SELECT id, first_name, language, phone, email, sms_consent,"
                    " email_consent, no_contact FROM guardians"
                )
            }
        except sqlite3.Error as exc:
            raise ConfigError(f"roster {path}: {exc}") from None
        finally:
            conn.close()
        return cls(schools, students, guardians, synthetic)

    def check_event(self, event: Event) -> None:
        """Reject events that name schools or students this district does not have."""
        d = event.data
        ids: list[tuple[str, str]] = []
        if isinstance(d, PlatformSwitch) and d.schools:
            ids = [(f"data.schools[{i}]", s) for i, s in enumerate(d.schools)]
        elif isinstance(d, MealsSchedule) and d.sites != "all":
            ids = [(f"data.sites[{i}]", s) for i, s in enumerate(d.sites)]
        elif isinstance(d, AbsenceThreshold | AttendanceRecorded):
            ids = [("data.school_id", d.school_id)]
            st = self.students.get(d.student_id)
            if st is None:
                raise EventValidationError(f"data.student_id: unknown student {d.student_id!r}", "data.student_id")
            if st.school_id != d.school_id:
                raise EventValidationError(
                    f"data.school_id: student {d.student_id!r} is not enrolled at school {d.school_id!r}",
                    "data.school_id",
                )
        for where, sid in ids:
            if sid not in self.schools:
                raise EventValidationError(f"{where}: unknown school {sid!r}", where)

    def _students_in_scope(self, event: Event) -> Iterator[Student]:
        d = event.data
        if isinstance(d, PlatformSwitch):
            grades, schools = set(d.grades), set(d.schools) if d.schools else None
            return (
                s for s in self.students.values() if s.grade in grades and (schools is None or s.school_id in schools)
            )
        if isinstance(d, MealsSchedule):
            sites = None if d.sites == "all" else set(d.sites)
            return (s for s in self.students.values() if sites is None or s.school_id in sites)
        if isinstance(d, AbsenceThreshold):
            return iter([self.students[d.student_id]])
        raise EventValidationError(f"type: no audience rule for {event.type!r}", "type")

    def audience(self, campaign: Campaign, event: Event) -> list[Recipient]:
        """Recipients in a stable order: one per guardian (household) or per guardian and child."""
        if campaign.audience.select == "student":
            if not isinstance(event.data, AbsenceThreshold):
                raise EventValidationError("audience 'student' needs an event about one student", "type")
            students: list[Student] = [self.students[event.data.student_id]]
        else:
            students = list(self._students_in_scope(event))
        a = campaign.audience
        if a.grades or a.schools:
            grades, schools = set(a.grades or ()), set(a.schools or ())
            students = [
                s for s in students if (not grades or s.grade in grades) and (not schools or s.school_id in schools)
            ]
        by_guardian: dict[str, list[Student]] = {}
        for st in students:
            for gid in st.guardians:
                by_guardian.setdefault(gid, []).append(st)
        out: list[Recipient] = []
        for gid in sorted(by_guardian):
            g = self.guardians[gid]
            kids = tuple(sorted(by_guardian[gid], key=lambda s: s.id))
            if campaign.audience.per == "student":
                out.extend(Recipient(f"{gid}/{k.id}", g, (k,)) for k in kids)
            else:
                out.append(Recipient(gid, g, kids))
        return out


_SYNTHETIC_GRADES = ("06", "07", "08", "09", "10", "11", "12")
_SYNTHETIC_SCHOOL = {"06": "6001", "07": "6001", "08": "6001"}  # the rest at the senior high


def synthetic_roster(path: Path, families: int, *, sms_consent: bool = True) -> Path:
    """`families` guardians, each with one student in grades 6-12, languages en/es/ht in turn."""
    """Until the OneRoster generator lands: a roster for tests and benchmarks."""
    fixture = json.loads(FIXTURE.read_text("utf-8"))
    students, guardians = [], []
    for i in range(families):
        grade = _SYNTHETIC_GRADES[i % len(_SYNTHETIC_GRADES)]
        students.append(
            {
                "id": f"T{i:06d}",
                "first_name": f"Student{i}",
                "grade": grade,
                "school_id": _SYNTHETIC_SCHOOL.get(grade, "7001"),
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
