"""The pipeline's stages on their own: the policies as pure functions (no server, no clock read), the
ledger's state machine, and a fourth event type declared in one place."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from comms.app import App, Env
from comms.channels import Message
from comms.checks import check_templates
from comms.config import DailyCap, QuietHours, load_settings
from comms.events import EVENT_TYPES, EventData, RosterRef, Scope, make_event
from comms.events.models import Date, Identifier
from comms.ledger import FINAL, TRANSITIONS, Entry, IllegalTransition, Ledger, Mark, State
from comms.pipeline import policies
from comms.pipeline.audience import Target
from tests.conftest import MIAMI, NOON, ROOT, Clock

QUIET = QuietHours(start=dt.time(21), end=dt.time(8))


def msg(key: str, guardian: str | None = "G1", priority: str = "normal") -> Message:
    return Message(
        key=key, channel="sms", campaign="c", event_uid="e", lang="en", to="+1", body={}, priority=priority,
        guardian=guardian,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("hour", "minute", "until"),
    [(20, 59, None), (21, 0, (25, 8)), (3, 30, (24, 8)), (7, 59, (24, 8)), (8, 0, None), (12, 0, None)],
)
def test_quiet_hours_span_midnight(hour: int, minute: int, until: tuple[int, int] | None) -> None:
    now = dt.datetime(2026, 11, 24, hour, minute, tzinfo=MIAMI)
    got = policies.quiet_until(now, QUIET)
    assert got == (dt.datetime(2026, 11, until[0], until[1], tzinfo=MIAMI) if until else None)


def test_quiet_hours_hold_all_but_emergencies() -> None:
    night = dt.datetime(2026, 11, 24, 23, 0, tzinfo=MIAMI)
    go, later, until = policies.quiet_hours([msg("a"), msg("b", priority="emergency")], night, QUIET)
    assert [m.key for m in go] == ["b"] and [m.key for m in later] == ["a"] and until is not None
    go, later, until = policies.quiet_hours([msg("a")], NOON, QUIET)
    assert [m.key for m in go] == ["a"] and later == [] and until is None


def test_daily_cap_counts_what_went_today_and_spares_emergencies() -> None:
    cap = DailyCap(normal=3, emergency=10)
    allowed, capped = policies.daily_cap([msg("a"), msg("b"), msg("c", "G2")], {"G1": 2}, cap)
    assert [m.key for m in allowed] == ["a", "c"] and [m.key for m in capped] == ["b"]
    allowed, capped = policies.daily_cap([msg("d", priority="emergency")], {"G1": 9}, cap)
    assert [m.key for m in allowed] == ["d"] and capped == []


def test_a_capped_message_waits_for_the_next_days_window_then_expires() -> None:
    cap = DailyCap(normal=3, emergency=10, hold_days=2)
    evening = dt.datetime(2020, 11, 20, 18, 30, tzinfo=MIAMI)
    waits, expired = policies.hold_capped([msg("a")], evening, QUIET, cap)
    ((m, at, why),) = waits
    assert expired == [] and m.capped == "2020-11-20"
    assert at == dt.datetime(2020, 11, 21, QUIET.end.hour, QUIET.end.minute, tzinfo=MIAMI)
    assert why == f"daily_cap: 3 per day; waits until 2020-11-21 {QUIET.end:%H:%M}"
    # held again the next day: it keeps the day it was first held, and waits once more
    waits, _ = policies.hold_capped([m], at, QUIET, cap)
    assert [w[0].capped for w in waits] == ["2020-11-20"]
    # two days after it was first held: it expires, saying why
    waits, expired = policies.hold_capped([m], at + dt.timedelta(days=1), QUIET, cap)
    assert waits == [] and expired == [
        Mark("a", State.EXPIRED, None, "daily_cap: 3 per day; held since 2020-11-20, 2 day(s) at most")
    ]
    # released after a week-long outage: past hold_days, it does not go
    assert policies.waited_too_long("2020-11-20", dt.date(2020, 11, 22), cap) is None
    assert policies.waited_too_long("2020-11-20", dt.date(2020, 11, 27), cap) == (
        "daily_cap: held since 2020-11-20, 2 day(s) at most"
    )
    assert policies.waited_too_long(None, dt.date(2020, 11, 27), cap) is None
    # hold_days 0: nothing waits
    waits, expired = policies.hold_capped([msg("b")], evening, QUIET, DailyCap(hold_days=0))
    assert waits == [] and [e.key for e in expired] == ["b"]


def test_suppressed_names_the_reason() -> None:
    targets = {
        "k1": Target(key="G1", lang="en", to="+13055550101", recipient=None),
        "k2": Target(key="G2", lang="en", to="+13055550102", recipient=None, held="no_consent"),
        "k3": Target(key="G3", lang="en", to="+13055550103", recipient=None),
    }
    marks = policies.suppressed(targets, {"+13055550103": "STOP"})
    assert marks == [
        Mark("k2", State.SUPPRESSED, None, "no_consent"),
        Mark("k3", State.SUPPRESSED, None, "opted_out: STOP"),
    ]


def test_the_ledger_refuses_a_move_transitions_do_not_allow(tmp_path: Path) -> None:
    assert {State.SENT, State.FAILED, State.SUPPRESSED} <= FINAL
    assert not {State.NEW, State.PENDING, State.SENDING, State.DEFERRED} & FINAL
    assert all(State.NEW not in after for after in TRANSITIONS.values())
    ledger = Ledger(tmp_path / "l.db", Clock(NOON))
    e = Entry("k1", "src#1", "meals.schedule", "meal-schedule", "sms", "G1", "en", "G1", "+13055550101")
    ledger.open([e])
    with pytest.raises(IllegalTransition):  # nothing is sent that was never `sending`
        ledger.mark([Mark("k1", State.SENT, "SM1")])
    ledger.mark([Mark("k1", State.SUPPRESSED, None, "no_consent")])
    with pytest.raises(IllegalTransition, match="is suppressed"):  # a final state stays final
        ledger.mark_sending([("k1", {"key": "k1", "body": {}, "subject": None}, "2026-11-24")])
    with pytest.raises(IllegalTransition):
        ledger.mark([Mark("k1", State.PENDING)])
    assert ledger.rows(["k1"])["k1"].state is State.SUPPRESSED  # and the refused writes changed nothing
    ledger.close()


# -- a fourth event type, declared once ----------------------------------------------------------------
class SchoolClosure(EventData):
    """Made up for this test: some schools close for a day."""

    schools: list[Identifier] = Field(min_length=1)
    date: Date
    reason: Literal["weather", "power", "other"]

    def scope(self) -> Scope:
        return Scope(schools=frozenset(self.schools))

    def refs(self) -> list[RosterRef]:
        return [RosterRef(field=f"data.schools[{i}]", kind="school", id=s) for i, s in enumerate(self.schools)]


CLOSURE = make_event(
    "school.closure",
    {"schools": ["5001"], "date": "2020-09-04", "reason": "power"},
    id="closure-1",
    source="https://dadeschools.example/ops",
    time="2020-09-03T18:00:00-04:00",
)


def test_a_new_event_type_is_one_declaration(tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EVENT_TYPES, "school.closure", SchoolClosure)
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    for lang, words in (("en", "closed"), ("es", "cerrada"), ("ht", "fèmen")):
        (templates / "sms" / f"school_closure.{lang}.txt.j2").write_text(
            f"M-DCPS: {{{{ scope_schools|join(', ') }}}} {words} {{{{ event.date|date }}}}.", "utf-8"
        )
    config = (ROOT / "campaigns.yaml").read_text("utf-8") + (
        "\n  school-closure:\n    title: School closure\n    event_type: school.closure\n"
        "    audience: {select: scope}\n    channels:\n      sms: {template: school_closure}\n"
    )
    (tmp_path / "campaigns.yaml").write_text(config, "utf-8")
    env = Env.from_environ(
        {"COMMS_VAR": str(tmp_path / "var"), "COMMS_OUT": str(tmp_path / "out"), "COMMS_TEST_NOW": NOON.isoformat(),
         "COMMS_CONFIG": str(tmp_path / "campaigns.yaml"), "COMMS_TEMPLATES": str(templates)}
    )  # fmt: skip
    settings = load_settings(env.config)
    problems = check_templates(settings, env)  # no sample event: `comms validate` says so
    assert any("school-closure.event_type: no sample event of type 'school.closure'" in p for p in problems)

    app = App.open(env, clock=Clock(NOON), environ={})
    app.bus.publish_many(env.topic, [(None, CLOSURE)])
    from comms.worker import run

    workers = app.workers(["sms"])
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    sent = {(r.lang, r.state): r.messages for r in app.pipeline.ledger.counts("school-closure")}
    app.close()
    # school 5001: Sofía (G01, es) and Noah (G06, en)
    assert sent == {("en", "sent"): 1, ("es", "sent"): 1}
    texts = [p.read_text("utf-8") for p in (tmp_path / "out" / "outbox" / "sms").iterdir()]
    assert any("Sunset Palms Elementary cerrada viernes, 4 de septiembre de 2020" in t for t in texts), texts


def test_provider_answers_become_state_changes() -> None:
    from comms.channels import SendResult
    from comms.channels.twilio_sms import TwilioSmsChannel
    from comms.errors import PermanentDeliveryError, TransientDeliveryError
    from comms.ledger import Row
    from comms.pipeline import deliver

    messages = [msg("ok"), msg("stop"), msg("busy"), msg("released")]
    rows = {m.key: Row(m.key, State.PENDING, None, None, 0.0, "G1") for m in messages}
    rows["released"] = Row("released", State.DEFERRED, None, None, 0.0, "G1")
    results = [
        SendResult("ok", provider_id="SM1"),
        SendResult("stop", error=PermanentDeliveryError("recipient opted out (replied STOP)", "21610")),
        SendResult("busy", error=TransientDeliveryError("Twilio HTTP 429", "429")),
        SendResult("released", error=TransientDeliveryError("Twilio HTTP 503", "503")),
    ]
    o = deliver.outcomes(TwilioSmsChannel, messages, results, rows)
    assert [(m.key, m.state) for m in o.marks] == [
        ("ok", State.SENT),
        ("stop", State.FAILED),
        ("busy", State.PENDING),  # nothing went out: retried with the event
        ("released", State.DEFERRED),  # back to the release loop it came from
    ]
    assert o.optouts == [("sms", "+1", "opted_out", "provider 21610")]  # STOP joins the suppression list
    assert (o.sent, o.failed, o.retry) == (1, 1, 2) and o.transient is results[2].error


def test_a_crashs_messages_wait_until_the_providers_record_settles() -> None:
    from comms.ledger import Row
    from comms.pipeline import deliver

    rows = {k: Row(k, State.SENDING, None, None, at, None) for k, at in (("old", 900.0), ("new", 1090.0))}
    young, wait = deliver.settling([msg("old"), msg("new")], rows, now=1100.0, reconcile_after=120.0)
    assert [m.key for m in young] == ["new"] and wait == 110.0


def test_reports_move_a_row_forward_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db", Clock(NOON))
    e = Entry("k1", "src#1", "meals.schedule", "meal-schedule", "sms", "G1", "en", "G1", "+13055550101")
    ledger.open([e])
    ledger.mark([Mark("k1", State.SENDING)])
    # the provider's callback beats the pipeline's own `sent`: that `sent` is then nothing to do
    assert ledger.advance([Mark("k1", State.DELIVERED, "SM1")]) == 1
    ledger.mark([Mark("k1", State.SENT, "SM1")])
    assert ledger.advance([Mark("k1", State.DELIVERED), Mark("k1", State.UNDELIVERED, None, "30003")]) == 0
    assert ledger.advance([Mark("nobody", State.DELIVERED)]) == 0  # not our key: ignored
    assert ledger.rows(["k1"])["k1"].state is State.DELIVERED
    ledger.close()


def test_a_familys_bulk_unsubscribe_does_not_stop_an_emergency() -> None:
    assert not policies.stops(policies.UNSUBSCRIBED, emergency=True)
    assert policies.stops(policies.UNSUBSCRIBED, emergency=False)
    for reason in ("opted_out: replied STOP", "bounced: 550", "spam_report", "unsubscribed"):  # the last: a CSV
        assert policies.stops(reason, emergency=True)
