"""`comms effect`: the estimate of whether #ShowUpMDCPS messages change attendance, checked on
synthetic trials whose true effect is known (comms/dev/trial.py)."""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from comms.app import App, Env
from comms.dev.demo import school_days, ungated
from comms.dev.generate import generate_bundle
from comms.dev.trial import attendance_stream, expected_difference, propensity
from comms.effect import Z95, Estimate, Followed, estimate, follow, measure, report
from comms.oneroster import import_bundle
from comms.worker import run
from tests.conftest import MIAMI, ROOT, Clock, env_vars


def followed(arm: str, *absences: int, days: int = 10, tier: str = "schoolwide", lang: str = "es") -> list[Followed]:
    return [
        Followed(student=f"{arm}{i}", arm=arm, tier=tier, lang=lang, days=days, absences=a)
        for i, a in enumerate(absences)
    ]


def test_the_interval_is_welchs_difference_of_means() -> None:
    e = estimate("all", followed("treated", 1, 2, 3) + followed("control", 3, 4, 5), min_arm=2)
    se = math.sqrt(0.01 / 3 + 0.01 / 3)  # each arm's rates have variance 0.01
    assert (e.n_treated, e.n_control) == (3, 3)
    assert e.treated == pytest.approx(0.2) and e.control == pytest.approx(0.4)
    assert e.difference == pytest.approx(-0.2)
    assert (e.low, e.high) == (pytest.approx(-0.2 - Z95 * se), pytest.approx(-0.2 + Z95 * se))
    assert e.verdict == "fewer absences with the messages (-50% of the control group's rate)"


def test_it_says_when_the_sample_is_too_small_or_the_interval_holds_zero() -> None:
    small = estimate("all", followed("treated", 1, 2) + followed("control", 3, 4))
    assert small.difference is None and small.low is None
    assert small.verdict == "too small to tell: fewer than 30 students in an arm"
    same = estimate("all", followed("treated", *[1, 2, 3] * 10) + followed("control", *[3, 2, 1] * 10))
    assert same.difference == pytest.approx(0.0) and same.low is not None and same.low < 0 < (same.high or 0)
    assert same.verdict == "no difference the data can tell from chance: the interval includes 0"


def test_the_report_splits_by_tier_and_language() -> None:
    rows = (
        followed("treated", *[1] * 30, tier="targeted", lang="ht")
        + followed("control", *[2] * 30, tier="targeted", lang="ht")
        + followed("treated", 1, lang="en")
    )
    groups = {e.group: e for e in report(rows)}
    assert list(groups) == ["all", "tier schoolwide", "tier targeted", "language en", "language ht"]
    assert groups["tier targeted"].n_treated == 30 and groups["language en"].verdict.startswith("too small")


def test_follow_counts_the_school_days_after_the_message_day_and_waits_for_the_rest() -> None:
    days = [
        (d.isoformat(), "unexcused" if i % 4 == 0 else "present")
        for i, d in enumerate(school_days(dt.date(2020, 11, 2), 15))
    ]
    assigned = [("S1", "treated", "schoolwide", "2020-11-06"), ("S2", "control", "targeted", "2020-11-19")]
    out, short = follow(assigned, {"S1": days, "S2": days}, {"S1": "es"}, days=5)
    # S1: the 5 school days after Friday, November 6: Nov 9-13 (school days 5..9 of the stream)
    assert out == [Followed(student="S1", arm="treated", tier="schoolwide", lang="es", days=5, absences=1)]
    assert short == 1  # S2 has only 1 school day recorded after November 19


def test_the_95_interval_covers_the_true_effect_in_95_of_100_simulated_trials() -> None:
    """200 seeded trials of 300 students per arm, each student with their own chance of missing a day
    (the generator's), 20 school days followed: the interval holds the true difference (-effect x the
    average chance, 0.3) in about 95% of them, with a 10% effect and with none."""
    for effect in (0.1, 0.0):
        covered = 0
        for rep in range(200):
            rng = random.Random(rep)
            rows = []
            for i in range(600):
                arm = "treated" if i % 2 else "control"
                p = propensity(rep, f"S{i}", 0.3) * ((1 - effect) if arm == "treated" else 1)
                absences = sum(rng.random() < p for _ in range(20))
                rows.append(Followed(student=f"S{i}", arm=arm, tier=None, lang=None, days=20, absences=absences))
            e = estimate("all", rows)
            assert e.low is not None and e.high is not None
            covered += e.low <= -effect * 0.3 <= e.high
        assert 0.91 <= covered / 200 <= 0.99, (effect, covered)


# -- a synthetic trial through the real pipeline ---------------------------------------------------------
STUDENTS, MEAN, SEED = 600, 0.3, 7
# before: three weekly uploads of the SIS (Friday evenings); the students who reach 5 absences get their
# first #ShowUpMDCPS message (or are held out) that evening, and are assigned an arm
WEEKS = [school_days(dt.date(2020, 9, 7) + dt.timedelta(weeks=w), 5) for w in range(3)]
AFTER = school_days(dt.date(2020, 9, 28), 20)  # the 20 school days after the last Friday: the outcome


@dataclass
class Trial:
    env: Env
    arms: dict[str, str]
    estimates: list[Estimate]
    truth: float  # the true average effect on the trial's students, absences per school day


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`comms roster generate` (600 students, imported), and campaigns.yaml with `holdout: 0.5` on
    #ShowUpMDCPS."""
    folder = tmp_path_factory.mktemp("district")
    generate_bundle(folder / "bundle", STUDENTS, seed=SEED)
    import_bundle(folder / "bundle", folder / "roster.db")
    doc = yaml.safe_load(ungated(ROOT / "campaigns.yaml", folder).read_text("utf-8"))
    doc["campaigns"]["show-up"].update(holdout=0.5, holdout_seed="synthetic-trial")
    (folder / "trial.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return folder


def simulate(district: Path, tmp_path: Path, effect: float) -> Trial:
    """Synthetic attendance (comms/dev/trial.py) through the bus, the attendance consumer and the SMS
    pipeline, a week at a time, at 5 p.m. on Fridays; the treated students miss `effect` fewer days
    from the day after their first message on. Then `comms effect`'s estimates and the true effect."""
    env = Env.from_environ(
        {
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(district / "trial.yaml"),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
            "COMMS_ROSTER": str(district / "roster.db"),
        }
    )
    clock = Clock(dt.datetime.combine(WEEKS[0][0], dt.time(17), tzinfo=MIAMI))
    app = App.open(env, clock=clock, environ={})
    students = {s: st.school_id for s, st in sorted(app.pipeline.roster.students.items())}
    workers = app.workers(["attendance", "sms"])
    workers[0].max_records = 5000  # a week's upload at once

    def treated() -> dict[str, dt.date]:
        assigned = app.pipeline.ledger.assignments("show-up")
        return {s: dt.date.fromisoformat(since) for s, arm, _, since in assigned if arm == "treated" and since}

    for days in [*WEEKS, AFTER]:
        clock.now = dt.datetime.combine(days[-1], dt.time(17), tzinfo=MIAMI)
        stream = attendance_stream(
            students, days, school_year="2020-2021", seed=SEED, mean=MEAN, effect=effect, treated=treated()
        )
        app.bus.publish_many(env.topic, [(None, r) for r in stream])
        run(workers if days is not AFTER else workers[:1], until_idle=True)  # after: attendance only
    for w in workers:
        w.close()
    assigned = app.pipeline.ledger.assignments("show-up")
    roster = app.pipeline.roster
    app.close()
    arms = {s: arm for s, arm, *_ in assigned}
    rows, short = measure(assigned, roster, env.ledger.with_name("attendance.db"), 20)
    assert short == 0 and len(rows) == len(arms)  # every student followed for 20 school days
    truth, _ = expected_difference(arms, seed=SEED, mean=MEAN, effect=effect)
    return Trial(env, arms, report(rows), truth)


def test_the_report_recovers_a_known_effect(district: Path, tmp_path: Path) -> None:
    """Treated students miss a quarter fewer days: the interval holds the true effect, below 0."""
    trial = simulate(district, tmp_path, effect=0.25)
    arms = list(trial.arms.values())
    assert 240 <= len(arms) <= 360 and abs(arms.count("control") / len(arms) - 0.5) < 0.08
    overall = trial.estimates[0]
    assert overall.low is not None and overall.high is not None
    assert overall.low <= trial.truth <= overall.high and overall.high < 0, (trial.truth, overall)
    assert overall.verdict.startswith("fewer absences with the messages")
    shown = subprocess.run(
        [sys.executable, "-m", "comms.cli", "effect", "show-up"],
        env={**os.environ, **env_vars(trial.env), "COLUMNS": "250"},
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    text = shown.stdout.decode()
    assert shown.returncode == 0, shown.stderr.decode()
    assert f"{overall.difference:+.3f} ({overall.low:+.3f} to {overall.high:+.3f})" in text
    assert f"hold-out: {arms.count('treated')} treated, {arms.count('control')} control" in text
    assert "tier schoolwide" in text and "language ht" in text and "too small to tell" in text


def test_the_report_finds_no_effect_when_there_is_none(district: Path, tmp_path: Path) -> None:
    trial = simulate(district, tmp_path, effect=0.0)
    overall = trial.estimates[0]
    assert overall.low is not None and overall.high is not None
    assert trial.truth == 0 and overall.low < 0 < overall.high
    assert overall.verdict == "no difference the data can tell from chance: the interval includes 0"
