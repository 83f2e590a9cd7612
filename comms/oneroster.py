"""Import a OneRoster 1.1 CSV bundle into the roster database (`comms roster import DIR`).

Read: manifest.csv, orgs.csv (type school), users.csv (roles student, and parent, guardian or relative
for the adults a school may contact), enrollments.csv (a student's school when users.csv names none).
demographics.csv and classes.csv may be present and are not needed. Columns beyond the standard, as
OneRoster allows with the `metadata.` prefix:

    metadata.language      en | es | ht   the guardian's language (default: the district's)
    metadata.<c>Consent    true | false   consent to a channel, one column per channel consent `c` its
                                          class declares (`smsConsent`, `emailConsent`, `voiceConsent`),
                                          default as the channel declares (SMS and voice: false, no
                                          consent, no message; e-mail: true, school e-mail needs no opt-in)
    metadata.noContact     true | false   never contact (default false)
    metadata.synthetic     true | false   generated data (`comms roster generate`): local providers only

Two kinds of problem:
- Structural (the folder or a required file missing, a required column missing, a delimiter other than
  a comma, bytes that are not UTF-8, a field past the csv module's limit, which an unclosed quote
  causes): the bundle cannot be trusted and **nothing changes**; `comms roster import` exits 1. A
  broken export must never empty the roster, or the next event would reach nobody.
- A bad row is reported with file, line and reason and left out (or its bad field left empty); it never
  stops the import. Nothing is guessed: a phone with letters (`305-CALL-NOW`) or an extension, an
  e-mail address that is not one address, a name with control characters are reported.

A re-import that would remove more than `max_shrink` of the families (20%) is refused unless allowed:
a partial export looks like a district that lost a fifth of its families.
"""

from __future__ import annotations

import csv
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comms import addresses
from comms.channels import channel_classes
from comms.progress import NO_PROGRESS, Tracker
from comms.store import SqliteFile

# guardians before consents were one column per channel's consent (sms_consent, email_consent)
_V1_GUARDIANS = """
ALTER TABLE guardians RENAME TO guardians_v1;
CREATE TABLE guardians (id TEXT PRIMARY KEY, first_name TEXT NOT NULL, language TEXT NOT NULL,
    phone TEXT, email TEXT, consents TEXT NOT NULL, no_contact INTEGER NOT NULL, synthetic INTEGER NOT NULL DEFAULT 0);
INSERT INTO guardians SELECT id, first_name, language, phone, email,
    trim(iif(sms_consent, 'sms ', '') || iif(email_consent, 'email', '')), no_contact, synthetic FROM guardians_v1;
DROP TABLE guardians_v1;
"""

LANGUAGES = ("en", "es", "ht")
GUARDIAN_ROLES = ("parent", "guardian", "relative")
#: OneRoster 1.1's grade vocabulary (CEDS): a student may also have no grade
ONEROSTER_GRADES = frozenset({"IT", "PR", "PK", "TK", "KG", *(f"{n:02d}" for n in range(1, 14)), "PS", "UG", "Other"})
REQUIRED_FILES = ("orgs.csv", "users.csv")
REQUIRED_COLUMNS = {
    "orgs.csv": ("sourcedId", "name", "type"),
    "users.csv": ("sourcedId", "role", "givenName"),
    "enrollments.csv": ("userSourcedId", "schoolSourcedId", "role"),
    "manifest.csv": ("propertyName", "value"),
}
MAX_SHRINK = 0.2

SCHEMA = """
CREATE TABLE IF NOT EXISTS schools (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS students (id TEXT PRIMARY KEY, first_name TEXT NOT NULL, grade TEXT NOT NULL,
    school_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guardians (id TEXT PRIMARY KEY, first_name TEXT NOT NULL, language TEXT NOT NULL,
    phone TEXT, email TEXT, consents TEXT NOT NULL, no_contact INTEGER NOT NULL, synthetic INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS links (student_id TEXT NOT NULL, guardian_id TEXT NOT NULL,
    PRIMARY KEY (student_id, guardian_id));
"""


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


class BundleError(Exception):
    """The bundle fails a structural check: nothing is imported."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class ImportReport:
    problems: list[Problem] = field(default_factory=list)  # rows left out or fixed
    fatal: list[Problem] = field(default_factory=list)  # structural: nothing was imported
    warnings: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rows now in each table
    changes: dict[str, Counter[str]] = field(default_factory=dict)  # table -> added/updated/removed

    @property
    def ok(self) -> bool:
        return not self.fatal


def _bool(value: str | None, default: bool) -> bool:
    v = (value or "").strip().lower()
    return default if not v else v in ("true", "1", "yes", "y")


def _ids(row: dict[str, str], column: str) -> list[str]:
    """A OneRoster list field ("a,b,c") as its non-empty items."""
    return [x.strip() for x in row.get(column, "").split(",") if x.strip()]


def _control(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


class _Lines:
    """Decoded lines of a file, with the line number known for an encoding error."""

    def __init__(self, path: Path) -> None:
        self.path, self.line = path, 0

    def __iter__(self) -> Iterator[str]:
        with self.path.open("rb") as f:
            first = True
            for raw in f:
                self.line += 1
                if first:
                    raw, first = raw.removeprefix(b"\xef\xbb\xbf"), False  # Excel's "CSV UTF-8" BOM
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    hint = " (Latin-1 or Windows-1252?)" if raw[exc.start] >= 0x80 else ""
                    raise BundleError(
                        Problem(
                            self.path.name,
                            self.line,
                            f"byte 0x{raw[exc.start]:02x} is not UTF-8{hint}: OneRoster files are UTF-8; "
                            "export again as UTF-8",
                        )
                    ) from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) one at a time (a district's users.csv held whole took about 1 GB); BundleError
    for what makes the whole file unreadable."""
    if not path.exists():
        return
    lines = _Lines(path)
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader, [])]
        _check_header(path.name, header)
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            line = reader.line_num
            if len(values) != len(header):
                yield line, {"__short__": f"{len(values)} fields where the header has {len(header)}"}
                continue
            row = {k: v.strip() for k, v in zip(header, values, strict=True) if k}
            if row.get("status", "") == "tobedeleted":
                continue
            yield line, row
    except csv.Error as exc:
        raise BundleError(
            Problem(path.name, reader.line_num, f"{exc} (an unclosed quote swallows the rest of the file)")
        ) from None


def _check_header(name: str, header: list[str]) -> None:
    required = REQUIRED_COLUMNS.get(name, ())
    if len(header) == 1 and any(d in header[0] for d in ";\t|"):
        delim = next(d for d in ";\t|" if d in header[0])
        raise BundleError(Problem(name, 1, f"columns are separated by {delim!r}: OneRoster CSV uses commas"))
    missing = [c for c in required if c not in header]
    if missing:
        raise BundleError(Problem(name, 1, f"required column(s) missing: {', '.join(missing)}"))


def check_structure(directory: Path) -> list[Problem]:
    """The checks a bundle must pass before anything is read into the roster."""
    if not directory.is_dir():
        return [Problem(str(directory), 0, "is not a folder (a OneRoster bundle is a folder of CSV files)")]
    return [
        Problem(name, 0, "file missing: a OneRoster bundle needs orgs.csv and users.csv")
        for name in REQUIRED_FILES
        if not (directory / name).is_file()
    ]


def read_bundle(
    directory: Path, default_language: str = "en", region: str = "US", progress: Tracker = NO_PROGRESS
) -> tuple[dict[str, Any], ImportReport]:
    """Parse a bundle into tables of rows; row problems are collected; BundleError if it is broken."""
    report = ImportReport()
    bad = report.problems.append
    if not (directory / "manifest.csv").is_file():
        report.warnings.append(Problem("manifest.csv", 0, "missing: the bundle's version is not stated (read as 1.1)"))
    for line, row in _rows(directory / "manifest.csv"):
        if row.get("propertyName") == "oneroster.version" and row.get("value") not in ("1.1", "1.1.0"):
            bad(Problem("manifest.csv", line, f"oneroster.version {row.get('value')!r}: this importer reads 1.1"))

    schools: dict[str, tuple[str, str]] = {}
    for line, row in _rows(directory / "orgs.csv"):
        if "__short__" in row:
            bad(Problem("orgs.csv", line, row["__short__"]))
            continue
        if row.get("type") != "school":
            continue
        if not row.get("sourcedId") or not row.get("name"):
            bad(Problem("orgs.csv", line, "a school needs sourcedId and name"))
        elif row["sourcedId"] in schools:
            bad(Problem("orgs.csv", line, f"school {row['sourcedId']}: sourcedId repeats an earlier row; left out"))
        elif _control(row["name"]):
            bad(Problem("orgs.csv", line, f"school {row['sourcedId']}: name has control characters; left out"))
        else:
            schools[row["sourcedId"]] = (row["sourcedId"], row["name"])

    enrolled_at: dict[str, str] = {}
    progress.task("enrollments.csv rows")
    for line, row in _rows(directory / "enrollments.csv"):
        if line % 1000 == 0:
            progress.advance("enrollments.csv rows", 1000)
        if "__short__" in row:
            bad(Problem("enrollments.csv", line, row["__short__"]))
        elif row.get("role") == "student" and row.get("schoolSourcedId") in schools:
            enrolled_at.setdefault(row.get("userSourcedId", ""), row["schoolSourcedId"])

    students: dict[str, tuple[Any, ...]] = {}
    guardians: dict[str, tuple[Any, ...]] = {}
    links: set[tuple[str, str]] = set()
    seen: dict[str, int] = {}  # sourcedId -> its line, for duplicates
    left_out: dict[str, int] = {}  # students left out -> their line, for the guardians that name them
    agents: dict[str, tuple[int, str, list[str]]] = {}  # user -> (line, role, agent ids) to link afterwards
    progress.task("users.csv rows")
    for line, row in _rows(directory / "users.csv"):
        if line % 1000 == 0:
            progress.advance("users.csv rows", 1000)
        if "__short__" in row:
            bad(Problem("users.csv", line, row["__short__"]))
            continue
        uid, role, given = row.get("sourcedId", ""), row.get("role", ""), row.get("givenName", "")
        if not uid:
            bad(Problem("users.csv", line, "sourcedId is empty"))
            continue
        if uid in seen:
            bad(Problem("users.csv", line, f"{role} {uid}: sourcedId repeats line {seen[uid]}; this row left out"))
            continue
        seen[uid] = line
        if role == "student":
            grades = _ids(row, "grades")
            school = next((o for o in _ids(row, "orgSourcedIds") if o in schools), None)
            school = school or enrolled_at.get(uid, "")
            why = None
            if not given:
                why = f"student {uid}: givenName is empty"
            elif _control(given):
                why = f"student {uid}: givenName has control characters"
            elif grades and grades[0] not in ONEROSTER_GRADES:
                why = (
                    f"student {uid}: grade {grades[0]!r} is not a OneRoster 1.1 grade "
                    "(IT, PR, PK, TK, KG, 01..13, PS, UG, Other)"
                )
            elif not school:
                why = f"student {uid}: no known school in orgSourcedIds or enrollments"
            if why:
                bad(Problem("users.csv", line, why))
                left_out[uid] = line
                continue
            students[uid] = (uid, given, grades[0] if grades else "", school)
            agents[uid] = (line, role, _ids(row, "agentSourcedIds"))
        elif role in GUARDIAN_ROLES:
            if not given or _control(given):
                bad(
                    Problem(
                        "users.csv",
                        line,
                        f"{role} {uid}: givenName is {'empty' if not given else 'not text (control characters)'}",
                    )
                )
                continue
            phone = None
            raw_phone = row.get("sms") or row.get("phone")
            if raw_phone:
                try:
                    phone = addresses.phone(raw_phone, region)
                except addresses.AddressError as exc:
                    bad(Problem("users.csv", line, f"{role} {uid}: phone {exc}; left empty"))
            email = None
            if row.get("email"):
                try:
                    email = addresses.email(row["email"])
                except addresses.AddressError as exc:
                    bad(Problem("users.csv", line, f"{role} {uid}: email is not one valid address ({exc}); left empty"))
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
                " ".join(
                    c.consent
                    for c in channel_classes()
                    if c.consent and _bool(row.get(f"metadata.{c.consent}Consent"), c.consent_default)
                ),
                _bool(row.get("metadata.noContact"), False),
                _bool(row.get("metadata.synthetic"), False),
            )
            agents[uid] = (line, role, _ids(row, "agentSourcedIds"))
    for uid, (line, role, ids) in agents.items():
        for other in ids:
            pair = (uid, other) if role == "student" else (other, uid)
            if pair[0] in students and pair[1] in guardians:
                links.add(pair)
            elif other in left_out:
                bad(
                    Problem(
                        "users.csv", line, f"{role} {uid}: links to student {other}, left out (line {left_out[other]})"
                    )
                )
            elif other not in students and other not in guardians and other not in seen:
                bad(Problem("users.csv", line, f"{role} {uid}: agentSourcedIds names unknown user {other!r}"))
    tables = {"schools": schools, "students": students, "guardians": guardians, "links": {pair: pair for pair in links}}
    return tables, report


def import_bundle(
    directory: str | Path,
    db: str | Path,
    default_language: str = "en",
    *,
    allow_shrink: bool = False,
    max_shrink: float = MAX_SHRINK,
    progress: Tracker = NO_PROGRESS,
) -> ImportReport:
    """Replace the roster in `db` with the bundle's, in one transaction; report what changed.

    A bundle that fails a structural check, or that would remove more than `max_shrink` of the
    families without `allow_shrink`, changes nothing: the report's `fatal` says why."""
    directory = Path(directory)
    fatal = check_structure(directory)
    if fatal:
        return ImportReport(fatal=fatal)
    try:
        tables, report = read_bundle(directory, default_language, progress=progress)
    except BundleError as exc:
        return ImportReport(fatal=[exc.problem])
    file = SqliteFile(Path(db), "roster")
    conn = file.open(synchronous="NORMAL")
    keys = {"schools": "id", "students": "id", "guardians": "id", "links": "student_id, guardian_id"}
    try:
        with file.errors("cannot write"):
            conn.executescript(SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if "sms_consent" in {r[1] for r in conn.execute("PRAGMA table_info(guardians)")}:
                    for statement in _V1_GUARDIANS.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                for table, rows in tables.items():
                    width = len(keys[table].split(","))
                    old = {tuple(r[:width]): tuple(r) for r in conn.execute(f"SELECT * FROM {table}")}
                    new = {(k,) if isinstance(k, str) else k: v for k, v in rows.items()}
                    changes = Counter(
                        added=len(new.keys() - old.keys()),
                        removed=len(old.keys() - new.keys()),
                        updated=sum(1 for k in new.keys() & old.keys() if tuple(new[k]) != tuple(old[k])),
                    )
                    report.changes[table] = changes
                    if table == "guardians" and old and not allow_shrink and changes["removed"] > max_shrink * len(old):
                        report.fatal.append(
                            Problem(
                                "users.csv",
                                0,
                                f"would remove {changes['removed']:,} of {len(old):,} families "
                                f"({changes['removed'] / len(old):.0%}, more than {max_shrink:.0%}): nothing changed; "
                                "if the district really lost them, import again with --allow-shrink",
                            )
                        )
                        conn.execute("ROLLBACK")
                        return report
                    if changes["added"] or changes["removed"] or changes["updated"]:
                        conn.execute(f"DELETE FROM {table}")
                        if new:
                            width_all = len(next(iter(new.values())))
                            conn.executemany(
                                f"INSERT INTO {table} VALUES ({','.join('?' * width_all)})", list(new.values())
                            )
                    report.counts[table] = len(new)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    finally:
        conn.close()
    return report
