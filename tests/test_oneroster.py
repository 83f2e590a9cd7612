"""OneRoster 1.1 import: bad rows reported by file, line and reason; households, languages and consent
reach the pipeline; a re-import changes nothing unless the bundle did."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comms.app import App, Env
from comms.cli import app as cli
from comms.dev.demo import demo_events
from comms.oneroster import import_bundle
from comms.roster import Roster
from comms.worker import run
from tests.conftest import NOON, ROOT, UNGATED, Clock

BUNDLE = ROOT / "tests" / "data" / "oneroster"


def test_bad_rows_are_reported_with_line_and_reason(tmp_path: Path) -> None:
    report = import_bundle(BUNDLE, tmp_path / "roster.db")
    assert [str(p) for p in report.problems] == [
        "orgs.csv:5: a school needs sourcedId and name",
        "users.csv:8: student s7: no known school in orgSourcedIds or enrollments",
        "users.csv:9: student s8: givenName is empty",
        "users.csv:12: parent g3: phone is not a valid number; left empty",
        "users.csv:12: parent g3: email is not one valid address (An email address must have an @-sign.); left empty",
        "users.csv:13: parent g4: metadata.language 'fr' is not one of en, es, ht; using en",
        "users.csv:13: parent g4: agentSourcedIds names unknown user 's77'",
    ]
    # s6 is in grade 13, which OneRoster 1.1 has (the fifth year some districts run)
    assert report.counts == {"schools": 2, "students": 6, "guardians": 5, "links": 8}


def test_imported_roster(tmp_path: Path) -> None:
    import_bundle(BUNDLE, tmp_path / "roster.db")
    r = Roster.load(tmp_path / "roster.db")
    assert r.guardians["g1"].phone == "+13055550101" and r.guardians["g1"].language == "es"
    assert r.guardians["g2"].phone == "+13055550102" and r.guardians["g2"].language == "ht"
    assert r.guardians["g3"].phone is None and r.guardians["g3"].email is None  # reported, not guessed
    assert r.guardians["g4"].language == "en" and "sms" not in r.guardians["g4"].consents
    assert r.guardians["g5"].no_contact
    assert r.students["s5"].school_id == "7001"  # from enrollments.csv
    assert set(r.students["s4"].guardians) == {"g2", "g3"}
    assert "s9" not in r.students  # status tobedeleted


def test_households_languages_and_consent_reach_the_pipeline(tmp_path: Path) -> None:
    import_bundle(BUNDLE, tmp_path / "roster.db")
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
            "COMMS_ROSTER": str(tmp_path / "roster.db"),
        }
    )
    app = App.open(env, clock=Clock(NOON), environ={})
    app.bus.publish(env.topic, demo_events()[1])  # meals, district-wide, one message per household
    workers = app.workers(["sms"])
    run(workers, until_idle=True)
    workers[0].close()
    rows = app.pipeline.ledger.counts("meal-schedule")
    app.close()
    sent = Counter({lang: n for _, _, lang, state, n in rows if state == "sent"})
    # g1 (es, three children): one SMS; g2 (ht): one; g3 has no valid number; g4 no SMS consent; g5 no contact
    assert sent == Counter({"es": 1, "ht": 1})
    texts = [p.read_text("utf-8") for p in (tmp_path / "out" / "outbox" / "sms").glob("*.txt")]
    assert any("martes y jueves" in t for t in texts) and any("madi ak jedi" in t for t in texts)
    assert sum(n for *_, state, n in rows if state == "suppressed") == 3


def test_reimport_is_idempotent_and_reports_changes(tmp_path: Path) -> None:
    db = tmp_path / "roster.db"
    import_bundle(BUNDLE, db)
    again = import_bundle(BUNDLE, db)
    assert all(sum(c.values()) == 0 for c in again.changes.values())
    changed = tmp_path / "bundle"
    shutil.copytree(BUNDLE, changed)
    users = (
        (changed / "users.csv")
        .read_text("utf-8")
        .replace("María,Pérez", "Maria,Perez")
        .replace("s3,active,2020-08-01,true,6001,student,s3,,Mateo,Pérez,,,,,,g1,08,,,,,\n", "")
    )
    (changed / "users.csv").write_text(users, "utf-8")
    report = import_bundle(changed, db)
    assert report.changes["guardians"] == Counter(added=0, removed=0, updated=1)
    assert report.changes["students"] == Counter(added=0, removed=1, updated=0)
    assert report.changes["links"]["removed"] == 1


def test_generated_bundle_imports_cleanly_and_is_reproducible(tmp_path: Path) -> None:
    from comms.dev.generate import generate_bundle

    a, b = tmp_path / "a", tmp_path / "b"
    counts = generate_bundle(a, 1500, seed=7)
    generate_bundle(b, 1500, seed=7)
    assert (a / "users.csv").read_bytes() == (b / "users.csv").read_bytes()  # seeded: the same bundle
    report = import_bundle(a, tmp_path / "roster.db")
    assert report.problems == []
    assert report.counts["students"] == counts["students"] == 1500
    r = Roster.load(tmp_path / "roster.db")
    langs = Counter(g.language for g in r.guardians.values())
    assert set(langs) == {"en", "es", "ht"} and langs["es"] > langs["en"] > langs["ht"]
    assert r.synthetic


def test_a_synthetic_roster_never_reaches_a_real_provider(tmp_path: Path) -> None:
    import pytest

    from comms.dev.generate import generate_bundle
    from comms.errors import ConfigError

    generate_bundle(tmp_path / "b", 50)
    import_bundle(tmp_path / "b", tmp_path / "roster.db")
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_CONFIG": str(UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
            "COMMS_ROSTER": str(tmp_path / "roster.db"),
        }
    )
    real = {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+13055550000"}
    with pytest.raises(ConfigError, match="is synthetic"):
        App.open(env, environ=real)
    App.open(env, environ={**real, "COMMS_TWILIO_API_URL": "http://127.0.0.1:9"}).close()
    App.open(env, environ={}).close()


def test_campaign_audience_narrowed_by_grade_band_and_school(tmp_path: Path) -> None:
    cfg = tmp_path / "campaigns.yaml"
    cfg.write_text(
        (ROOT / "campaigns.yaml")
        .read_text("utf-8")
        .replace(
            "    audience: {select: scope, per: household}   # three children, one message",
            "    audience: {select: scope, per: household, grades: [PK, KG, '01', '02', '03', '04', '05']}",
        ),
        "utf-8",
    )
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(cfg),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
        }
    )
    app = App.open(env, clock=Clock(NOON), environ={})
    app.bus.publish(env.topic, demo_events()[1])  # meals, district-wide
    workers = app.workers(["email"])
    run(workers, until_idle=True)
    workers[0].close()
    keys = app.pipeline.ledger.conn.execute("SELECT recipient FROM deliveries").fetchall()
    app.close()
    # PK-05 in the fixture: Sofía (G01), Jean's sister Nadège (G03, G04), Noah (G06)
    assert sorted(k for (k,) in keys) == ["G01", "G03", "G04", "G06"]


# -- a bundle that fails a structural check changes nothing ---------------------------------------------
def _bundle(tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    b = tmp_path / "bundle"
    shutil.copytree(BUNDLE, b)
    edit(b)
    return b


def _rewrite(name: str, fn: Callable[[str], str]) -> Callable[[Path], None]:
    return lambda b: (b / name).write_text(fn((b / name).read_text("utf-8")), "utf-8")


STRUCTURAL: dict[str, tuple[Callable[[Path], None], str]] = {
    "users.csv without role": (_rewrite("users.csv", lambda t: t.replace(",role,", ",kind,", 1)), "missing: role"),
    "users.csv without sourcedId": (
        _rewrite("users.csv", lambda t: t.replace("sourcedId,", "id,", 1)),
        "missing: sourcedId",
    ),
    "no users.csv": (lambda b: (b / "users.csv").unlink(), "users.csv: file missing"),
    "semicolons": (_rewrite("users.csv", lambda t: t.replace(",", ";")), "separated by ';'"),
    "Latin-1 bytes": (
        lambda b: (b / "users.csv").write_bytes((b / "users.csv").read_text("utf-8").encode("latin-1")),
        "byte 0xe9 is not UTF-8 (Latin-1 or Windows-1252?)",
    ),
    "a field past the csv limit": (
        _rewrite("users.csv", lambda t: t + 'g9,active,,true,,parent,g9,,"Unclosed,X\n' + "x" * 200_000 + "\n"),
        "field larger than field limit",
    ),
}


@pytest.mark.parametrize("case", list(STRUCTURAL))
def test_a_broken_bundle_changes_nothing_and_exits_1(case: str, tmp_path: Path) -> None:
    db = tmp_path / "roster.db"
    import_bundle(BUNDLE, db)
    before = Roster.load(db)
    edit, expected = STRUCTURAL[case]
    bundle = _bundle(tmp_path, edit)
    report = import_bundle(bundle, db)
    assert not report.ok and expected in str(report.fatal[0]), report.fatal
    after = Roster.load(db)
    assert after.guardians == before.guardians and after.students == before.students  # not emptied
    r = CliRunner().invoke(cli, ["roster", "import", str(bundle)], env={"COMMS_ROSTER": str(db)})
    assert r.exit_code == 1 and expected in r.output and "unchanged" in r.output and "Traceback" not in r.output


def test_a_folder_that_does_not_exist_changes_nothing(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli, ["roster", "import", str(tmp_path / "nope")], env={"COMMS_ROSTER": str(tmp_path / "r.db")}
    )
    assert r.exit_code == 1 and "is not a folder" in r.output and not (tmp_path / "r.db").exists()


def test_a_reimport_that_drops_many_families_needs_allow_shrink(tmp_path: Path) -> None:
    db = tmp_path / "roster.db"
    import_bundle(BUNDLE, db)
    keep = ("sourcedId", "s", "g4", "g5", "t1")
    bundle = _bundle(
        tmp_path, _rewrite("users.csv", lambda t: "\n".join(ln for ln in t.splitlines() if ln.startswith(keep)) + "\n")
    )
    report = import_bundle(bundle, db)
    assert not report.ok and "would remove 3 of 5 families (60%, more than 20%)" in str(report.fatal[0])
    assert len(Roster.load(db).guardians) == 5
    assert import_bundle(bundle, db, allow_shrink=True).ok
    assert len(Roster.load(db).guardians) == 2


# -- rows reported, not silently taken -------------------------------------------------------------------
HOSTILE_ROWS = [
    "g10,active,,true,,parent,g10,,Ana,A,,,ana@example.org,305-CALL-NOW,,s1,,,es,true,,",
    "g11,active,,true,,parent,g11,,Ben,B,,,ben@example.org,(305) 555-0111 ext. 12,,s1,,,en,true,,",
    'g12,active,,true,,parent,g12,,Cy,C,,,"cy @example.org",,,s1,,,en,true,,',
    'g13,active,,true,,parent,g13,,Di,D,,,"di@example.org, x@example.org",,,s1,,,en,true,,',
    "g14,active,,true,,parent,g14,,Ed,E,,,@example.org,,,s1,,,en,true,,",
    'g15,active,,true,,parent,g15,,Fa,F,,,"fa@example.org\nBcc: all@example.org",,,s1,,,en,true,,',
    "g16,active,,true,,parent,g16,,G\x1bi,G,,,gi@example.org,,,s1,,,en,true,,",
    "g1,active,,true,,parent,g1,,Impostor,X,,,imp@example.org,3055550199,,s1,,,en,true,,",
    "r1,active,,true,,relative,r1,,Rosa,R,,,rosa@example.org,3055550120,,s1,,,es,true,,",
    "s20,active,,true,7001,student,s20,,Tia,T,,,,,,g17,TK,,,,,",
    "s21,active,,true,7001,student,s21,,Uma,U,,,,,,g17,UG,,,,,",
    "s22,active,,true,7001,student,s22,,Val,V,,,,,,g17,Other,,,,,",
    "s23,active,,true,7001,student,s23,,Wes,W,,,,,,g17,,,,,,",
    "s24,active,,true,7001,student,s24,,Xi,X,,,,,,g17,14,,,,,",
    'g17,active,,true,,guardian,g17,,Yves,Y,,,yves@example.org,3055550121,,"s20,s24",,,ht,true,,',
    "g18,active,,true,,parent",  # a short row
]


def test_hostile_rows_are_reported_with_file_line_and_reason(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, _rewrite("users.csv", lambda t: t + "\n".join(HOSTILE_ROWS) + "\n"))
    (bundle / "manifest.csv").unlink()
    report = import_bundle(bundle, tmp_path / "roster.db")
    said = "\n".join(map(str, report.problems))
    for expected in (
        "parent g10: phone has letters",
        "parent g11: phone has an extension",
        "parent g12: email is not one valid address",
        "parent g13: email is not one valid address",
        "parent g14: email is not one valid address",
        "parent g15: email is not one valid address",
        "parent g16: givenName is not text (control characters)",
        "parent g1: sourcedId repeats line 10; this row left out",
        "student s24: grade '14' is not a OneRoster 1.1 grade",
        "guardian g17: links to student s24, left out (line",
        "6 fields where the header has 22",
    ):
        assert expected in said, (expected, said)
    assert [str(w) for w in report.warnings] == [
        "manifest.csv: missing: the bundle's version is not stated (read as 1.1)"
    ]
    r = Roster.load(tmp_path / "roster.db")
    assert r.guardians["g1"].first_name == "María"  # the first row with the id, not the impostor after it
    assert r.guardians["g10"].phone is None and r.guardians["g11"].phone is None
    assert all(r.guardians[g].email is None for g in ("g12", "g13", "g14", "g15"))
    assert "g16" not in r.guardians
    assert r.guardians["r1"].phone == "+13055550120"  # a relative is a contact, not an unknown user
    assert {r.students[s].grade for s in ("s20", "s21", "s22", "s23")} == {"TK", "UG", "Other", ""}


def test_the_generated_bundle_is_oneroster_1_1_in_bulk_mode(tmp_path: Path) -> None:
    import csv

    from comms.dev.generate import generate_bundle

    generate_bundle(tmp_path / "b", 200, seed=3)
    b = tmp_path / "b"
    users = list(csv.DictReader((b / "users.csv").open(encoding="utf-8")))
    assert all(u["status"] == "" and u["dateLastModified"] == "" for u in users)  # bulk: left blank
    guardians = [u for u in users if u["role"] in ("parent", "guardian")]
    assert guardians and all(u["orgSourcedIds"] for u in guardians)
    manifest = dict(csv.reader((b / "manifest.csv").open(encoding="utf-8")))
    files = {k.removeprefix("file."): v for k, v in manifest.items() if k.startswith("file.")}
    assert len(files) == 13 and files["classes"] == "bulk" and files["demographics"] == "absent"
    classes = {c["sourcedId"] for c in csv.DictReader((b / "classes.csv").open(encoding="utf-8"))}
    enrolled = {e["classSourcedId"] for e in csv.DictReader((b / "enrollments.csv").open(encoding="utf-8"))}
    assert enrolled <= classes  # every enrollment names a class that exists
    courses = {c["sourcedId"] for c in csv.DictReader((b / "courses.csv").open(encoding="utf-8"))}
    assert {c["courseSourcedId"] for c in csv.DictReader((b / "classes.csv").open(encoding="utf-8"))} <= courses
