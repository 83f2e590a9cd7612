"""A randomized hold-out per campaign (issue 16): a reproducible control group that gets nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from comms.app import App
from comms.cli import app as cli
from comms.config import parse_settings
from comms.errors import ConfigError
from comms.events import make_event
from comms.ledger import Ledger
from comms.pipeline.policies import arm
from comms.roster import Roster
from tests.conftest import ROOT, UNGATED, env_vars, fixture_env, run_consumers

SEED = "show-up-2020"


def _config(tmp_path: Path, share: float, exclude: list[str] | None = None) -> Path:
    doc = yaml.safe_load(UNGATED.read_text("utf-8"))
    doc["campaigns"]["show-up"].update(holdout=share, holdout_seed=SEED, holdout_exclude_tiers=exclude or [])
    path = tmp_path / f"campaigns-{share}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")
    return path


def _threshold(student: str, school: str, tier: str = "schoolwide", absences: int = 5) -> bytes:
    return make_event(
        "attendance.absence-threshold",
        {"student_id": student, "school_id": school, "absences": absences, "tier": tier,
         "school_year": "2020-2021", "as_of": "2020-09-01"},
        id=f"threshold-{student}-{tier}", source="https://dadeschools.net/sis/attendance",
        time="2020-09-01T18:30:00-04:00",
    )  # fmt: skip


def test_the_arm_is_a_pure_reproducible_draw() -> None:
    students = [f"S{i:06d}" for i in range(20_000)]
    control = [s for s in students if arm(SEED, s, 0.1) == "control"]
    assert 0.09 < len(control) / len(students) < 0.11
    assert control == [s for s in students if arm(SEED, s, 0.1) == "control"]  # the same, run after run
    assert control != [s for s in students if arm("another seed", s, 0.1) == "control"]
    assert set(control) <= {s for s in students if arm(SEED, s, 0.2) == "control"}  # a larger share nests


def test_held_out_families_get_nothing_on_any_channel_across_restarts_and_redeliveries(
    tmp_path: Path, providers
) -> None:  # type: ignore[no-untyped-def]
    env = fixture_env(tmp_path, COMMS_CONFIG=str(_config(tmp_path, 0.5)))
    roster = Roster.load(env.roster)
    events = [_threshold(s.id, s.school_id) for s in roster.students.values()]
    control = {s.id for s in roster.students.values() if arm(SEED, s.id, 0.5) == "control"}
    assert control and len(control) < len(roster.students)  # both arms hold someone

    def reached() -> tuple[set[str], set[str]]:
        tw, sg = providers
        return {m["to"] for m in tw.messages}, set(sg.per_recipient())

    run_consumers(env, providers, events, names=("sms", "email"))
    phones, emails = reached()
    for s in roster.students.values():  # every treated student's family is reached (control: the ledger, below)
        if s.id not in control:
            assert any(roster.guardians[g].phone in phones or roster.guardians[g].email in emails for g in s.guardians)
    ledger = Ledger(env.ledger)
    held = {
        (student, channel)
        for student, channel in ledger.conn.execute(
            "SELECT substr(event_uid, instr(event_uid, 'threshold-') + 10, 5), channel FROM deliveries "
            "WHERE state='held_out'"
        )
    }
    went = {
        student
        for (student,) in ledger.conn.execute(
            "SELECT substr(event_uid, instr(event_uid, 'threshold-') + 10, 5) FROM deliveries "
            "WHERE state IN ('sent', 'delivered')"
        )
    }
    arms = ledger.arms("show-up")
    ledger.close()
    assert {s for s, _ in held} == control and {c for _, c in held} == {"sms", "email"}
    assert not (went & control)
    assert arms == {s.id: ("control" if s.id in control else "treated") for s in roster.students.values()}

    # the same events again, by a restarted consumer: nothing more, the arms as they were
    before = len(providers[0].messages), sum(providers[1].per_recipient().values())
    run_consumers(env, providers, events, names=("sms", "email"))
    assert (len(providers[0].messages), sum(providers[1].per_recipient().values())) == before
    # a new share in campaigns.yaml does not move anyone already decided
    env2 = fixture_env(tmp_path, COMMS_CONFIG=str(_config(tmp_path, 0.1)))
    more = [_threshold(s.id, s.school_id, "targeted", 6) for s in roster.students.values()]
    run_consumers(env2, providers, more, names=("sms",))
    assert Ledger(env.ledger).arms("show-up") == arms
    app = App.open(env2, environ={})
    try:
        targeted_held = {
            r[0] for r in app.pipeline.ledger.query("SELECT event_uid FROM deliveries WHERE state='held_out'")
        }
    finally:
        app.close()
    assert {u.split("threshold-")[1].split("-")[0] for u in targeted_held} == control
    # `comms report` says how many are in each arm, and why messages were held
    result = CliRunner().invoke(cli, ["report", "show-up"], env={**env_vars(env), "COLUMNS": "200"})
    assert result.exit_code == 0 and "held_out: control group of the campaign's hold-out (50%)" in result.output
    assert f"hold-out: {len(control)} student(s) in the control group (sent nothing)" in result.output


def test_an_excluded_tier_is_always_sent(tmp_path: Path, providers) -> None:  # type: ignore[no-untyped-def]
    env = fixture_env(tmp_path, COMMS_CONFIG=str(_config(tmp_path, 0.5, ["intensive"])))
    roster = Roster.load(env.roster)
    control = sorted(s.id for s in roster.students.values() if arm(SEED, s.id, 0.5) == "control")
    student = roster.students[control[0]]
    run_consumers(env, providers, [_threshold(student.id, student.school_id, "intensive", 11)], names=("sms", "email"))
    tw, sg = providers
    phones = {roster.guardians[g].phone for g in student.guardians}
    emails = {roster.guardians[g].email for g in student.guardians}
    assert phones & {m["to"] for m in tw.messages} or emails & set(sg.per_recipient())


def test_a_hold_out_is_refused_where_it_has_no_place() -> None:
    text = (ROOT / "campaigns.yaml").read_text("utf-8")
    with pytest.raises(ConfigError, match="holdout: never for an emergency campaign"):
        parse_settings(text.replace("    priority: emergency ", "    holdout: 0.1\n    priority: emergency ", 1))
    with pytest.raises(ConfigError, match="holdout_exclude_tiers: unknown tier 'severe'"):
        extra = "\n    holdout: 0.1\n    holdout_exclude_tiers: [severe]"
        parse_settings(text.replace('hashtag: "#ShowUpMDCPS"', 'hashtag: "#ShowUpMDCPS"' + extra))
    with pytest.raises(ConfigError, match="less than or equal to 0.5"):
        parse_settings(text.replace('    hashtag: "#ShowUpMDCPS"', '    hashtag: "#ShowUpMDCPS"\n    holdout: 0.9'))
    ok = parse_settings(text.replace('    hashtag: "#ShowUpMDCPS"', '    hashtag: "#ShowUpMDCPS"\n    holdout: 0.1'))
    assert ok.campaigns["show-up"].holdout == 0.1 and json.dumps(ok.campaigns["show-up"].holdout_exclude_tiers) == "[]"
