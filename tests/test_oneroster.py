"""OneRoster 1.1 import: bad rows reported by file, line and reason; households, languages and consent
reach the pipeline; a re-import changes nothing unless the bundle did."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from comms.app import App, Env
from comms.demo import demo_events
from comms.oneroster import import_bundle
from comms.roster import Roster
from comms.worker import run
from tests.conftest import NOON, ROOT, Clock

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
    assert r.guardians["g4"].language == "en" and not r.guardians["g4"].sms_consent
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
            "COMMS_CONFIG": str(ROOT / "campaigns.yaml"),
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
    from comms.generate import generate_bundle

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

    from comms.errors import ConfigError
    from comms.generate import generate_bundle

    generate_bundle(tmp_path / "b", 50)
    import_bundle(tmp_path / "b", tmp_path / "roster.db")
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_CONFIG": str(ROOT / "campaigns.yaml"),
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
