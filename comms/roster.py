"""Who the district's families are, and which of them an event concerns.

The roster is a database written by `comms roster import` (comms/oneroster.py), or a JSON file such
as the small fixture (comms/fixtures/roster.json) that the demo and the tests read. Which families
an event concerns comes from the event type's own `scope()` (comms/events/models.py).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from comms.channels import channel_classes
from comms.config import Campaign
from comms.errors import ConfigError, EventValidationError
from comms.events import Event
from comms.store import connect_read_only

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Guardian:
    id: str
    first_name: str
    language: str
    phone: str | None
    email: str | None
    consents: frozenset[str] = frozenset()  # the channels' consents given (sms, email, voice...)
    no_contact: bool = False

    def address(self, field: str | None) -> str | None:
        """The roster field a channel sends to (`Channel.address`)."""
        if field is None:
            return None
        value: str | None = getattr(self, field)
        return value


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
            consents = [(c.consent, c.consent_default) for c in channel_classes() if c.consent]
            guardians = {
                g["id"]: Guardian(
                    id=g["id"],
                    first_name=g["first_name"],
                    language=g["language"],
                    phone=g.get("phone"),
                    email=g.get("email"),
                    consents=frozenset(c for c, default in consents if g.get(f"{c}_consent", default)),
                    no_contact=g.get("no_contact", False),
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
        conn = connect_read_only(path)
        try:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(guardians)")}
            # a roster imported before consents were one column (comms/oneroster.py: _V1_GUARDIANS)
            consents = (
                "consents"
                if "consents" in columns
                else "trim(iif(sms_consent, 'sms ', '') || iif(email_consent, 'email', ''))"
            )
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
                r[0]: Guardian(
                    id=r[0],
                    first_name=r[1],
                    language=r[2],
                    phone=r[3],
                    email=r[4],
                    consents=frozenset(r[5].split()),
                    no_contact=bool(r[6]),
                )
                for r in conn.execute(
                    f"SELECT id, first_name, language, phone, email, {consents}, no_contact FROM guardians"  # noqa: S608
                )
            }
        except sqlite3.Error as exc:
            raise ConfigError(f"roster {path}: {exc}") from None
        finally:
            conn.close()
        return cls(schools, students, guardians, synthetic)

    def check_event(self, event: Event) -> None:
        """Reject events that name schools or students this district does not have."""
        refs = event.data.refs()
        for ref in refs:
            if ref.kind == "student" and ref.id not in self.students:
                raise EventValidationError(f"{ref.field}: unknown student {ref.id!r}", ref.field)
        if (enrolment := event.data.enrolment()) is not None:
            student, school = enrolment
            if self.students[student].school_id != school:
                raise EventValidationError(
                    f"data.school_id: student {student!r} is not enrolled at school {school!r}", "data.school_id"
                )
        for ref in refs:
            if ref.kind == "school" and ref.id not in self.schools:
                raise EventValidationError(f"{ref.field}: unknown school {ref.id!r}", ref.field)

    def _students_in_scope(self, event: Event, select: str = "scope") -> list[Student]:
        scope = event.data.scope_for(select)
        if scope is None:
            raise EventValidationError(f"type: {event.type!r} is not sent to anyone", "type")
        if scope.student is not None:
            return [self.students[scope.student]]
        grades, schools = scope.grades, scope.schools
        return [
            s
            for s in self.students.values()
            if (grades is None or s.grade in grades) and (schools is None or s.school_id in schools)
        ]

    def audience(self, campaign: Campaign, event: Event) -> list[Recipient]:
        """Recipients in a stable order: one per guardian (household) or per guardian and child."""
        students = self._students_in_scope(event, campaign.audience.select)
        if campaign.audience.select == "student":
            scope = event.data.scope()
            if scope is None or scope.student is None:
                raise EventValidationError("audience 'student' needs an event about one student", "type")
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
    """`families` guardians, each with one student in grades 6-12, languages en/es/ht in turn: a
    JSON roster for tests and benchmarks that need no OneRoster import."""
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
