"""No stale news: a consumer catching up after an outage never texts a family news that is past."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from comms.app import App
from comms.cli import app as cli
from comms.dev.demo import demo_events
from comms.events import parse_event
from comms.ledger import TRANSITIONS, State
from comms.pipeline.policies import past
from comms.worker import run
from tests.conftest import MIAMI, NOON, ROOT, Clock, env_vars, make_env, provider_env, run_consumers

SWITCH, MEALS = demo_events()[:2]


def test_past_is_a_pure_rule() -> None:
    assert past(dt.date(2020, 9, 11), dt.date(2020, 9, 11)) is None  # its last day: still true
    assert past(dt.date(2020, 9, 11), dt.date(2020, 9, 12)) == "news past: true until 2020-09-11"
    assert past("2020-12-31", dt.date(2021, 1, 1)) == "news past: true until 2020-12-31"
    assert past(None, dt.date(2030, 1, 1)) is None
    assert TRANSITIONS[State.EXPIRED] == frozenset()  # final: never sent later


def test_every_type_states_until_when_its_news_is_true() -> None:
    switch, meals = parse_event(SWITCH).data, parse_event(MEALS).data
    assert switch.expires() == dt.date(2020, 9, 11)  # its review date
    assert meals.expires() == dt.date(2020, 12, 31)  # the last day of the schedule
    doc = json.loads(SWITCH)
    del doc["data"]["review_date"]
    assert parse_event(json.dumps(doc)).data.expires() == dt.date(2020, 9, 17)  # two weeks after it took effect


def test_an_outage_that_ends_after_the_news_expires_sends_nothing_and_says_so(tmp_path: Path, providers) -> None:  # type: ignore[no-untyped-def]
    env = make_env(tmp_path, 20)
    late = Clock(dt.datetime(2020, 9, 14, 9, 0, tzinfo=MIAMI))  # the consumers were down until after the review date
    run_consumers(env, providers, [SWITCH], clock=late, names=("press", "sms", "email"))
    tw, sg = providers
    assert tw.messages == [] and sg.per_recipient() == {}
    app = App.open(env, clock=late, environ={})
    try:
        counts: Counter[tuple[str, str]] = Counter()
        for _, ch, _, st, n in app.pipeline.ledger.counts("platform-switch"):
            counts[(ch, st)] += n
    finally:
        app.close()
    assert {st for ch, st in counts if ch != "press_release"} == {"expired"}
    assert counts[("sms", "expired")] == 20 and counts[("email", "expired")] == 20
    # the press drafts are still written: the record of what happened, marked late
    drafts = sorted((env.out / "press").glob("*.md"))
    assert len(drafts) == 2 and all("late: 'news past: true until 2020-09-11'" in p.read_text("utf-8") for p in drafts)
    html = next((env.out / "press").glob("*.en.html")).read_text("utf-8")
    assert '<p class="late"><strong>LATE</strong>: news past: true until 2020-09-11</p>' in html
    # and `comms report` says why
    result = CliRunner().invoke(cli, ["report", "platform-switch"], env={**env_vars(env), "COLUMNS": "200"})
    assert result.exit_code == 0 and "news past: true until 2020-09-11" in result.output, result.output


def test_a_message_deferred_past_its_last_day_expires_instead_of_going(tmp_path: Path, providers) -> None:  # type: ignore[no-untyped-def]
    env = make_env(tmp_path, 10)
    night = Clock(dt.datetime(2020, 12, 31, 22, 0, tzinfo=MIAMI))  # the schedule's last evening, in quiet hours
    run_consumers(env, providers, [MEALS], clock=night, names=("sms",))
    tw, _ = providers
    assert tw.messages == []  # deferred to the morning
    app = App.open(env, clock=night, environ={})
    try:
        deferred = sum(n for _, ch, _, st, n in app.pipeline.ledger.counts("meal-schedule") if st == "deferred")
    finally:
        app.close()
    morning = Clock(dt.datetime(2021, 1, 1, 8, 5, tzinfo=MIAMI))
    app = App.open(env, clock=morning, environ=provider_env(*providers))
    try:
        workers = app.workers(["sms"])
        run(workers, until_idle=True)
        for w in workers:
            w.close()
        counts: Counter[str] = Counter()
        for _, _, _, st, n in app.pipeline.ledger.counts("meal-schedule"):
            counts[st] += n
    finally:
        app.close()
    assert tw.messages == [] and counts["expired"] == deferred and "deferred" not in counts and "sent" not in counts


def test_news_still_true_goes_out(tmp_path: Path, providers) -> None:  # type: ignore[no-untyped-def]
    env = make_env(tmp_path, 10)
    run_consumers(env, providers, [SWITCH], clock=Clock(NOON), names=("sms",))
    assert len(providers[0].messages) == 10
    assert ROOT  # the repo's own config and templates
