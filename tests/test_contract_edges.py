"""Events that pass a loose reading of the contract but would mislead a family or crash a consumer:
each is refused with the field named (`comms publish` and the consumers agree), or held by a stated
rule, never sent silently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from comms.app import App, Env
from comms.bus import DEAD_LETTER_SUFFIX
from comms.dev.demo import demo_events, sample_events
from comms.errors import EventValidationError
from comms.events import make_event, parse_event
from comms.worker import run
from tests.conftest import MEALS, NOON, ROOT, SWITCH, UNGATED, env_vars, mutated

SWITCH_DOC, MEALS_DOC, THRESHOLD_DOC = (json.loads(e) for e in sample_events())


def _record(day: str, school_year: str, id_: str = "r1") -> bytes:
    return make_event(
        "attendance.recorded",
        {
            "record_id": id_,
            "student_id": "S1001",
            "school_id": "6001",
            "date": day,
            "category": "unexcused",
            "school_year": school_year,
        },
        id=id_,
        source="https://dadeschools.net/sis/attendance",
        time=f"{day}T18:00:00-04:00",
    )


@pytest.mark.parametrize(
    ("day", "school_year", "why"),
    [
        ("2020-10-05", "9999-0000", "two consecutive years"),
        ("2015-10-05", "2020-2021", "not in school year 2020-2021"),
        ("2020-06-30", "2020-2021", "not in school year 2020-2021"),
        ("2021-07-01", "2020-2021", "not in school year 2020-2021"),
    ],
)
def test_a_school_year_that_does_not_match_the_date_is_refused(day: str, school_year: str, why: str) -> None:
    with pytest.raises(EventValidationError, match=why):
        parse_event(_record(day, school_year))
    doc = json.loads(mutated(THRESHOLD_DOC, "data.as_of", day))
    doc["data"]["school_year"] = school_year
    with pytest.raises(EventValidationError, match=why):
        parse_event(json.dumps(doc))
    assert parse_event(_record("2021-06-30", "2020-2021"))  # the last day of the year is in it


def test_empty_sites_are_refused_not_announced_as_all_sites() -> None:
    with pytest.raises(EventValidationError, match=r"data.sites"):
        parse_event(mutated(MEALS_DOC, "data.sites", []))


def test_links_must_be_https_and_ids_a_safe_character_set() -> None:
    with pytest.raises(EventValidationError, match="https"):
        parse_event(mutated(SWITCH_DOC, "data.instructions_url", "http://www.dadeschools.net/teams"))
    for bad_id in ("a\nstatus: approved", "two words", "", "#hash", "x" * 300):
        with pytest.raises(EventValidationError, match="id"):
            parse_event(mutated(SWITCH_DOC, "id", bad_id))
    with pytest.raises(EventValidationError, match="source"):
        parse_event(mutated(SWITCH_DOC, "source", "https://x\n"))


def _run(env: Env, events: list[bytes], names: list[str]) -> tuple[App, list]:
    app = App.open(env, environ={})
    app.bus.publish_many(env.topic, [(None, e) for e in events])
    workers = app.workers(names)
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    with app.bus.consumer("inspect", [env.topic + DEAD_LETTER_SUFFIX]) as c:
        dead = c.poll(max_records=1000, timeout=0.5)
    return app, dead


def test_a_correction_under_an_old_id_is_dead_lettered_as_a_conflict(env: Env) -> None:
    corrected = json.loads(MEALS)
    corrected["data"]["end_time"] = "19:00"  # same id, another body
    resent = json.dumps(json.loads(MEALS), indent=2).encode()  # the same event, other spacing: a retry
    app, dead = _run(env, [MEALS, resent, json.dumps(corrected).encode()], ["sms", "email"])
    counts = app.pipeline.ledger.counts("meal-schedule")
    app.close()
    reasons = [d.headers["reason"] for d in dead]
    assert len(dead) == 2 and {d.headers["consumer_group"] for d in dead} == {"comms-sms", "comms-email"}
    assert all("conflicting duplicate" in r and "meals-2020-09-01" in r for r in reasons), reasons
    assert sum(n for _, ch, _, st, n in counts if ch == "sms" and st == "sent") == 6  # once, the first body


def test_a_conflicting_attendance_record_is_dead_lettered_by_the_counter(env: Env) -> None:
    first = _record("2020-10-05", "2020-2021", "rec-1")
    doc = json.loads(first)
    doc["data"]["category"] = "present"
    app, dead = _run(env, [first, json.dumps(doc).encode()], ["attendance"])
    app.close()
    assert [d.headers["consumer_group"] for d in dead] == ["comms-attendance"]
    assert "conflicting duplicate" in dead[0].headers["reason"]


def _long_switch() -> bytes:
    # every character of the platform name forces UCS-2: the SMS runs to 4 segments
    return mutated(SWITCH_DOC, "data.to_platform", "Microsoft Teams — «plataforma»" + "ó" * 60, "long-switch")


def test_a_mass_sms_over_the_segment_limit_holds_the_event_in_every_language(env: Env) -> None:
    app, dead = _run(env, [_long_switch()], ["sms", "email"])
    counts = app.pipeline.ledger.counts("platform-switch")
    app.close()
    assert [d.headers["consumer_group"] for d in dead] == ["comms-sms"]
    reason = dead[0].headers["reason"]
    assert "sms_too_long" in reason and "more than district.sms_max_segments (3)" in reason and "UCS-2" in reason
    assert not [row for row in counts if row[1] == "sms"]  # not one SMS, in any language
    assert sum(n for _, ch, _, st, n in counts if ch == "email" and st == "sent") == 5  # e-mail has no such limit


def test_a_personal_sms_over_the_segment_limit_fails_for_that_family_with_the_reason(tmp_path: Path) -> None:
    roster = json.loads((ROOT / "comms" / "fixtures" / "roster.json").read_text("utf-8"))
    for s in roster["students"]:
        if s["id"] == "S1005":
            s["first_name"] = "Jean-" + "ő" * 150  # a name that makes this family's text UCS-2 and long
    path = tmp_path / "roster.json"
    path.write_text(json.dumps(roster, ensure_ascii=False), "utf-8")
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
            "COMMS_ROSTER": str(path),
            "COMMS_TEST_NOW": NOON.isoformat(),
        }
    )
    app, dead = _run(env, [sample_events()[2]], ["sms"])
    details = app.pipeline.ledger.details("show-up")
    app.close()
    assert dead == []
    assert [(ch, st) for ch, st, _, _ in details] == [("sms", "failed")]
    assert details[0][2].startswith("sms_too_long:")


# -- comms publish ------------------------------------------------------------------------------------
def _publish(env: Env, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comms.cli", "publish", str(path)],
        env={**os.environ, **env_vars(env), "COLUMNS": "200"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _pretty_with_one_error() -> bytes:
    text = json.dumps(json.loads(SWITCH), indent=2)
    return text.replace('"reason": ', '"reason" ', 1).encode()


PUBLISH_CASES = {
    "missing file": (None, "cannot read: No such file or directory"),
    "Latin-1 bytes": ('{"id": "caf\xe9"}'.encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 11)"),
    "JSON nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "pretty-printed with one syntax error": (_pretty_with_one_error(), "Expecting ':' delimiter at line"),
    "a huge integer": (MEALS.replace(b'"breakfast"', b"9" * 5000, 1), "4300 digits"),
    "an aware time where a local one is expected": (
        mutated(MEALS_DOC, "data.start_time", "16:00-05:00"),
        "data.start_time: Value error, must be a local time of day",
    ),
    "a time at year 1": (mutated(MEALS_DOC, "time", "0001-01-01T00:00:00+05:00"), "time: Value error, must be between"),
}


@pytest.mark.parametrize("case", list(PUBLISH_CASES))
def test_publish_answers_a_bad_file_with_one_clear_line(case: str, env: Env, tmp_path: Path) -> None:
    content, expected = PUBLISH_CASES[case]
    path = tmp_path / "events.json"
    if content is not None:
        path.write_bytes(content)
    r = _publish(env, path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "rejected line 2" not in r.stderr
    assert expected in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr  # the reason, and "nothing published" after a rejection


def test_what_publish_accepts_a_consumer_handles(env: Env, tmp_path: Path) -> None:
    """Every demo event passes publish and goes through every consumer without a dead letter."""
    path = tmp_path / "demo.jsonl"
    path.write_bytes(b"\n".join(demo_events()))
    assert _publish(env, path).returncode == 0
    app = App.open(env, environ={})
    workers = app.workers()
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    app.close()
    assert all(w.stats["dead_lettered"] == 0 for w in workers), [w.stats for w in workers]


def test_validate_renders_every_tier_and_refuses_an_sms_that_would_never_be_sent(tmp_path: Path) -> None:
    from comms.checks import check_templates
    from comms.config import parse_settings

    text = (ROOT / "campaigns.yaml").read_text("utf-8")
    long_label = "Intervenciones intensivas de la escuela y la comunidad, " + "más apoyo " * 20
    settings = parse_settings(text.replace("Intervenciones intensivas de la escuela y la comunidad", long_label))
    # a district's Spanish text that names the tier (the shipped one leaves the label to the e-mail)
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    sms = templates / "sms" / "absence_threshold.es.txt.j2"
    sms.write_text(sms.read_text("utf-8").replace(" {{ v.stop }}", " {{ tier.label }}. {{ v.stop }}"), "utf-8")
    env = Env.from_environ({"COMMS_TEMPLATES": str(templates)})
    problems = check_templates(settings, env)
    # only the intensive tier, only in Spanish: as configured, and in incident mode (site up, then down)
    assert len(problems) == 3, problems
    assert [p.endswith("it would never be sent") for p in problems] == [True] * 3
    assert "campaigns.show-up.channels.sms (es)" in problems[0] and "intensive" in problems[0]
    assert "it would never be sent" in problems[0]
