"""Import a OneRoster 1.1 CSV bundle into the roster database (`comms roster import DIR`).

Read: manifest.csv, orgs.csv (type school), users.csv (roles student, parent, guardian),
enrollments.csv (a student's school when users.csv names none). demographics.csv may be present and
is not needed. Columns beyond the standard, as OneRoster allows with the `metadata.` prefix:

    metadata.language      en | es | ht   the guardian's language (default: the district's)
    metadata.smsConsent    true | false   consent to text messages (default false: no consent, no SMS)
    metadata.emailConsent  true | false   (default true: school e-mail needs no opt-in)
    metadata.noContact     true | false   never contact (default false)
    metadata.synthetic     true | false   generated data (`comms roster generate`): local providers only

A bad row is reported with file, line and reason and left out; it never stops the import. A phone
number that is not a valid number is reported and left empty, never guessed.
"""

from __future__ import annotations

import csv
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from comms.bus.sqlite import connect
from comms.events.models import GRADE_CODES

LANGUAGES = ("en", "es", "ht")
GUARDIAN_ROLES = ("parent", "guardian")

SCHEMA = """
CREATE TABLE IF NOT EXISTS schools (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS students (id TEXT PRIMARY KEY, first_name TEXT NOT NULL, grade TEXT NOT NULL,
    school_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guardians (id TEXT PRIMARY KEY, first_name TEXT NOT NULL, language TEXT NOT NULL,
    phone TEXT, email TEXT, sms_consent INTEGER NOT NULL, email_consent INTEGER NOT NULL, no_contact INTEGER NOT NULL,
    synthetic INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS links (student_id TEXT NOT NULL, guardian_id TEXT NOT NULL,
    PRIMARY KEY (student_id, guardian_id));
"""


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ImportReport:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rows now in each table
    changes: dict[str, Counter[str]] = field(default_factory=dict)  # table -> added/updated/removed


def _bool(value: str | None, default: bool) -> bool:
    v = (value or "").strip().lower()
    return default if not v else v in ("true", "1", "yes", "y")


def _rows(path: Path, report: ImportReport) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) one at a time: a district's users.csv held whole took about 1 GB."""
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if row.get("status", "active").strip() == "tobedeleted":
                continue
            yield reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}


def read_bundle(directory: Path, default_language: str = "en", region: str = "US") -> tuple[dict, ImportReport]:
    """Parse a bundle into tables of rows; every problem is collected, none raised."""
    report = ImportReport()
    bad = report.problems.append
    for name in ("orgs.csv", "users.csv"):
        if not (directory / name).exists():
            bad(Problem(name, 0, "file missing: a OneRoster bundle needs orgs.csv and users.csv"))
    for line, row in _rows(directory / "manifest.csv", report):
        if row.get("propertyName") == "oneroster.version" and row.get("value") not in ("1.1", "1.1.0"):
            bad(Problem("manifest.csv", line, f"oneroster.version {row.get('value')!r}: this importer reads 1.1"))

    schools: dict[str, tuple[str, str]] = {}
    for line, row in _rows(directory / "orgs.csv", report):
        if row.get("type") != "school":
            continue
        if not row.get("sourcedId") or not row.get("name"):
            bad(Problem("orgs.csv", line, "a school needs sourcedId and name"))
            continue
        schools[row["sourcedId"]] = (row["sourcedId"], row["name"])

    enrolled_at: dict[str, str] = {}
    for _, row in _rows(directory / "enrollments.csv", report):
        if row.get("role") == "student" and row.get("schoolSourcedId") in schools:
            enrolled_at.setdefault(row.get("userSourcedId", ""), row["schoolSourcedId"])

    students: dict[str, tuple] = {}
    guardians: dict[str, tuple] = {}
    links: set[tuple[str, str]] = set()
    agents: dict[str, tuple[int, str, list[str]]] = {}  # user -> (line, role, agent ids) to link afterwards
    for line, row in _rows(directory / "users.csv", report):
        uid, role, given = row.get("sourcedId", ""), row.get("role", ""), row.get("givenName", "")
        if not uid:
            bad(Problem("users.csv", line, "sourcedId is empty"))
            continue
        if role == "student":
            grades = [g.strip() for g in row.get("grades", "").split(",") if g.strip()]
            school = next((o for o in row.get("orgSourcedIds", "").split(",") if o.strip() in schools), None)
            school = (school or enrolled_at.get(uid, "")).strip()
            if not given:
                bad(Problem("users.csv", line, f"student {uid}: givenName is empty"))
            elif not grades or grades[0] not in GRADE_CODES:
                bad(
                    Problem(
                        "users.csv",
                        line,
                        f"student {uid}: grade {grades[0] if grades else ''!r} is not a "
                        "OneRoster grade (PK, KG, 01..12)",
                    )
                )
            elif not school:
                bad(Problem("users.csv", line, f"student {uid}: no known school in orgSourcedIds or enrollments"))
            else:
                students[uid] = (uid, given, grades[0], school)
                agents[uid] = (line, role, [a.strip() for a in row.get("agentSourcedIds", "").split(",") if a.strip()])
        elif role in GUARDIAN_ROLES:
            if not given:
                bad(Problem("users.csv", line, f"{role} {uid}: givenName is empty"))
                continue
            phone = None
            raw_phone = row.get("sms") or row.get("phone")
            if raw_phone:
                try:
                    parsed = phonenumbers.parse(raw_phone, region)
                    if not phonenumbers.is_valid_number(parsed):
                        raise phonenumbers.NumberParseException(1, "not a valid number")
                    phone = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                except phonenumbers.NumberParseException:
                    bad(Problem("users.csv", line, f"{role} {uid}: phone is not a valid number; left empty"))
            email = row.get("email") or None
            if email and ("@" not in email or "." not in email.rpartition("@")[2]):
                bad(Problem("users.csv", line, f"{role} {uid}: email is not an address; left empty"))
                email = None
            lang = row.get("metadata.language", "").lower() or default_language
            if lang not in LANGUAGES:
                bad(
                    Problem(
                        "users.csv",
                        line,
                        f"{role} {uid}: metadata.language {lang!r} is not one of "
                        f"{', '.join(LANGUAGES)}; using {default_language}",
                    )
                )
                lang = default_language
            guardians[uid] = (
                uid,
                given,
                lang,
                phone,
                email,
                _bool(row.get("metadata.smsConsent"), False),
                _bool(row.get("metadata.emailConsent"), True),
                _bool(row.get("metadata.noContact"), False),
                _bool(row.get("metadata.synthetic"), False),
            )
            agents[uid] = (line, role, [a.strip() for a in row.get("agentSourcedIds", "").split(",") if a.strip()])
    for uid, (line, role, ids) in agents.items():
        for other in ids:
            pair = (uid, other) if role == "student" else (other, uid)
            if pair[0] in students and pair[1] in guardians:
                links.add(pair)
            elif other not in students and other not in guardians:
                bad(Problem("users.csv", line, f"{role} {uid}: agentSourcedIds names unknown user {other!r}"))
    tables = {"schools": schools, "students": students, "guardians": guardians, "links": {pair: pair for pair in links}}
    return tables, report


def import_bundle(directory: str | Path, db: str | Path, default_language: str = "en") -> ImportReport:
    """Replace the roster in `db` with the bundle's, in one transaction; report what changed."""
    tables, report = read_bundle(Path(directory), default_language)
    conn = connect(Path(db), synchronous="NORMAL")
    conn.executescript(SCHEMA)
    keys = {"schools": "id", "students": "id", "guardians": "id", "links": "student_id, guardian_id"}
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, rows in tables.items():
            old = {tuple(r[: len(keys[table].split(","))]): tuple(r) for r in conn.execute(f"SELECT * FROM {table}")}
            new = {(k,) if isinstance(k, str) else k: v for k, v in rows.items()}
            changes = Counter(
                added=len(new.keys() - old.keys()),
                removed=len(old.keys() - new.keys()),
                updated=sum(1 for k in new.keys() & old.keys() if tuple(new[k]) != tuple(old[k])),
            )
            report.changes[table] = changes
            if changes["added"] or changes["removed"] or changes["updated"]:
                conn.execute(f"DELETE FROM {table}")
                width = len(next(iter(new.values()))) if new else 0
                if new:
                    conn.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * width)})", list(new.values()))
            report.counts[table] = len(new)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    return report


def load_tables(db: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db))
    conn.row_factory = sqlite3.Row
    return conn
