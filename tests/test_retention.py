"""Retention: after the school year and `keep_days`, a message's text and address are forgotten,
while the counts, reasons and the exactly-once key stay (`comms ledger prune`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comms.cli import app as cli
from comms.config import ConfigError, parse_settings
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.ledger import Ledger
from comms.pipeline.policies import retention_cutoff
from tests.conftest import MEALS, MIAMI, NOON, ROOT, Clock, env_vars, make_env, run_consumers


def test_the_cutoff_is_the_end_of_the_last_school_year_at_least_keep_days_ago() -> None:
    at = lambda *a: dt.datetime(*a, tzinfo=MIAMI)  # noqa: E731
    assert retention_cutoff(at(2026, 11, 26, 9), "06-30", 30) == at(2026, 7, 1)
    assert retention_cutoff(at(2026, 7, 15), "06-30", 30) == at(2025, 7, 1)  # 30 days not over yet
    assert retention_cutoff(at(2026, 7, 31), "06-30", 30) == at(2026, 7, 1)
    assert retention_cutoff(at(2026, 3, 1), "06-30", 0) == at(2025, 7, 1)
    text = (ROOT / "campaigns.yaml").read_text("utf-8")
    bad = text.replace('school_year_ends: "06-30"', 'school_year_ends: "02-29"')
    assert bad != text
    with pytest.raises(ConfigError, match="not a day every year has"):
        parse_settings(bad)


def test_prune_forgets_texts_and_addresses_and_keeps_counts_and_the_key(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid], monkeypatch: pytest.MonkeyPatch
) -> None:
    tw, _ = providers
    env = make_env(tmp_path, 30)
    night = Clock(NOON.replace(hour=22))
    run_consumers(env, providers, [MEALS], clock=night, names=("press", "sms", "email"))  # SMS waits: deferred
    ledger = Ledger(env.ledger, night)
    ledger.keep_replies([("SM1", "sms", "+17860000001", "where do I pick up? call me at 305 555 0101")])
    ledger.suppress([("sms", "+17860000002", "STOP", "twilio")])
    counts = ledger.counts()
    deferred = ledger.conn.execute("SELECT count(*) FROM deliveries WHERE state='deferred'").fetchone()[0]
    assert deferred > 0
    done = ledger.prune(night.now.timestamp() + 1)
    assert done["messages"] > 0 and done["replies"] == 1 and done["contents"] > 0
    left = ledger.conn.execute(
        "SELECT channel, state, count(*) FROM deliveries WHERE payload IS NOT NULL OR destination IS NOT NULL "
        "GROUP BY 1, 2"
    ).fetchall()
    assert {(c, s) for c, s, _ in left} == {("press_release", "sent"), ("sms", "deferred")}  # not done: kept
    assert ledger.counts() == counts  # every count and state as it was
    assert not ledger.replies() and ledger.suppressed("sms", ["+17860000002"])  # an opt-out never expires
    assert ledger.prune(night.now.timestamp() + 1) == {"messages": 0, "replies": 0, "contents": 0}
    ledger.close()
    # the morning: the deferred texts still go, and the event redelivered sends nothing twice
    morning = Clock(night.now + dt.timedelta(hours=10, minutes=5))
    run_consumers(env, providers, [MEALS], clock=morning, names=("press", "sms", "email"))
    sent = tw.per_recipient()
    assert sum(sent.values()) == deferred - 1 and set(sent.values()) == {1}  # less the number that said STOP
    assert "+17860000002" not in sent
    for k, v in env_vars(env).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("COMMS_TEST_NOW", "2020-09-09T12:00:00-04:00")  # the CLI's clock: a week on
    ledger = Ledger(env.ledger)
    (held,) = ledger.conn.execute(  # what the morning sent: done, with its text and address
        "SELECT count(*) FROM deliveries WHERE channel='sms' AND (payload IS NOT NULL OR destination IS NOT NULL)"
    ).fetchone()
    ledger.close()
    assert held == deferred  # sent in the morning, and the one held by its STOP
    runner = CliRunner()
    dry = runner.invoke(cli, ["ledger", "prune", "--dry-run", "--before", "2020-09-04"], env={"COLUMNS": "300"})
    assert dry.exit_code == 0 and f"would forget the text and address of {held:,}," in dry.output, dry.output
    future = runner.invoke(cli, ["ledger", "prune", "--before", "2021-01-01"])
    assert future.exit_code == 1 and "in the future" in future.output
    assert runner.invoke(cli, ["ledger", "prune", "--before", "soon"]).exit_code == 1
    default = runner.invoke(cli, ["ledger", "prune"], env={"COLUMNS": "300"})  # the school year 2019-20 is over
    assert default.exit_code == 0, default.output
    assert "messages before 2020-07-01 00:00 EDT: forgot the text and address of 0," in default.output
