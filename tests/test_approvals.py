"""The human gate on mass sends (campaigns.yaml `approval: one | two`), on the real campaigns.yaml:
held as `awaiting_approval` until decided, sent by the consumers' release loops once approved (quiet
hours and the cap still apply), cancelled for good when rejected; the audit log cannot be changed."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comms.accounts import Accounts, Role
from comms.app import App, Env
from comms.approvals import Approvals, ref
from comms.cli import app as cli
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.errors import ApprovalError, IllegalTransition
from comms.ledger import Ledger, Mark, State
from comms.worker import run
from tests.conftest import MEALS, NOON, ROOT, SWITCH, Clock, copies, env_vars, make_env, provider_env

FAMILIES = 12
PASSWORD = "a long enough password"


def gated_env(tmp_path: Path) -> Env:
    return make_env(tmp_path, FAMILIES, COMMS_CONFIG=str(ROOT / "campaigns.yaml"))


def consume(env: Env, providers: tuple[FakeTwilio, FakeSendGrid], events: list[bytes], clock: Clock) -> Counter[str]:
    app = App.open(env, clock=clock, environ=provider_env(*providers))
    app.bus.publish_many(env.topic, [(None, e) for e in events])
    workers = app.workers(["press", "sms", "email"])
    run(workers, until_idle=True)
    stats: Counter[str] = Counter()
    for w in workers:
        stats.update(w.stats)
        w.close()
    app.close()
    return stats


def sent(provider: FakeTwilio | FakeSendGrid) -> int:
    return sum(provider.per_recipient().values())


def states(env: Env, campaign: str) -> Counter[tuple[str, str]]:
    ledger = Ledger(env.ledger)
    out: Counter[tuple[str, str]] = Counter()
    for r in ledger.counts(campaign):
        out[(r.channel, r.state)] += r.messages
    ledger.close()
    return out


def approvals(env: Env) -> tuple[Approvals, Ledger]:
    ledger = Ledger(env.ledger, Clock(NOON))
    a = App.open(env, clock=Clock(NOON), environ={})
    settings = a.settings
    a.close()
    return Approvals(ledger, settings), ledger


def test_a_mass_send_waits_and_two_means_two_different_people(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    env = gated_env(tmp_path)
    stats = consume(env, providers, [MEALS], Clock(NOON))  # meal-schedule: approval two
    held = states(env, "meal-schedule")
    assert held[("sms", "awaiting_approval")] > 0 and held[("email", "awaiting_approval")] > 0
    assert stats["awaiting_approval"] == held[("sms", "awaiting_approval")] + held[("email", "awaiting_approval")]
    assert not sent(tw) and not sent(sg)  # nothing went to a family
    assert held[("press_release", "sent")] == 2  # the press drafts are written: they are the office's to approve

    gate, ledger = approvals(env)
    uid = gate.resolve(ref(MEALS_UID))  # the short ref `comms approvals` shows
    (first,) = gate.approve(uid, "ana")
    assert first.verdict is None and first.approvers == ("ana",)
    with pytest.raises(ApprovalError, match="must come from another person"):
        gate.approve(uid, "ana")
    consume(env, providers, [], Clock(NOON))
    assert not sent(tw) and not sent(sg)  # one of two is not approval
    (second,) = gate.approve(uid, "ben")
    assert second.verdict == "approved" and second.approvers == ("ana", "ben")
    with pytest.raises(ApprovalError, match="already decided"):
        gate.approve(uid, "cy")
    audit = [(line.who, line.action) for line in gate.audit()]
    ledger.close()
    stats = consume(env, providers, [], Clock(NOON))  # the release loops send what was approved
    after = states(env, "meal-schedule")
    assert after[("sms", "sent")] == held[("sms", "awaiting_approval")] == sent(tw)
    assert after[("email", "sent")] == held[("email", "awaiting_approval")] == sent(sg)
    assert not after[("sms", "awaiting_approval")] and stats["released"] == sent(tw) + sent(sg)
    assert audit == [("ben", "approve"), ("ana", "approve")]


MEALS_UID = "https://dadeschools.net/food-nutrition#meals-2020-09-01"


def test_a_rejected_event_never_sends_not_on_redelivery_nor_after_a_race(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, sg = providers
    env = gated_env(tmp_path)
    consume(env, providers, [SWITCH], Clock(NOON))  # platform-switch: emergency, approval one
    held = states(env, "platform-switch")
    gate, ledger = approvals(env)
    uid = gate.waiting()[0].event_uid
    (status,) = gate.reject(uid, "ana", "wrong date in the text")
    assert status.verdict == "rejected"
    cancelled = states(env, "platform-switch")
    assert cancelled[("sms", "cancelled")] == held[("sms", "awaiting_approval")]
    assert not cancelled[("sms", "awaiting_approval")]
    # A consumer that ledgered its last chunk after the rejection's update (a race, or a crash
    # between them) leaves awaiting rows behind: its release loop cancels them, never sends them.
    ledger.conn.execute(
        "UPDATE deliveries SET state='awaiting_approval' WHERE key IN (SELECT key FROM deliveries "
        "WHERE campaign='platform-switch' AND channel='sms' AND state='cancelled' LIMIT 2)"
    )
    with pytest.raises(ApprovalError, match="already decided"):
        gate.approve(uid, "ben")  # a no is final
    ledger.close()
    consume(env, providers, copies(SWITCH, 2, same_id=True), Clock(NOON))  # and the event redelivered
    after = states(env, "platform-switch")
    assert not sent(tw) and not sent(sg)
    assert after[("sms", "cancelled")] == held[("sms", "awaiting_approval")]
    assert not after[("sms", "awaiting_approval")] and not after[("sms", "sent")]


def test_an_approval_at_night_waits_for_the_morning_unless_emergency(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    tw, _ = providers
    env = gated_env(tmp_path)
    night = Clock(NOON.replace(hour=22))
    consume(env, providers, [MEALS, SWITCH], night)
    gate, ledger = approvals(env)
    for s in gate.waiting():
        for who in ("ana", "ben")[: s.required]:
            gate.approve(s.event_uid, who)
    ledger.close()
    consume(env, providers, [], night)
    after_meals, after_switch = states(env, "meal-schedule"), states(env, "platform-switch")
    assert after_meals[("sms", "deferred")] > 0 and not after_meals[("sms", "sent")]  # quiet hours
    assert after_switch[("sms", "sent")] == sent(tw) > 0  # an emergency goes at once
    consume(env, providers, [], Clock(night.now + dt.timedelta(hours=10, minutes=5)))  # 08:05 the next day
    assert states(env, "meal-schedule")[("sms", "sent")] == after_meals[("sms", "deferred")]


def test_the_audit_log_and_the_gate_states_cannot_be_rewritten(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    env = gated_env(tmp_path)
    consume(env, providers, [SWITCH], Clock(NOON))
    gate, ledger = approvals(env)
    uid = gate.waiting()[0].event_uid
    gate.approve(uid, "ana")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ledger.conn.execute("UPDATE audit SET who='mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ledger.conn.execute("DELETE FROM audit")
    # an awaiting message can never be marked sent without going through `sending` (the ledger says
    # `sending` before the provider has it), and a sent one can never be cancelled
    (key,) = ledger.conn.execute("SELECT key FROM deliveries WHERE state='awaiting_approval' LIMIT 1").fetchone()
    with pytest.raises(IllegalTransition):
        ledger.mark([Mark(key, State.SENT)])
    (press,) = ledger.conn.execute("SELECT key FROM deliveries WHERE state='sent' LIMIT 1").fetchone()
    with pytest.raises(IllegalTransition):
        ledger.mark([Mark(press, State.CANCELLED)])
    # the tallies the console reads agree with the rows, whatever moved them
    direct = ledger.conn.execute(
        "SELECT campaign, channel, lang, state, count(*) FROM deliveries GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    ).fetchall()
    assert [tuple(r) for r in ledger.counts()] == [tuple(r) for r in direct]
    ledger.close()


def test_the_cli_approves_and_rejects_as_an_account_with_the_role(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = gated_env(tmp_path)
    consume(env, providers, [MEALS, SWITCH], Clock(NOON))
    for k, v in env_vars(env).items():
        monkeypatch.setenv(k, v)
    with Accounts(env.ledger.with_name("accounts.db")) as accounts:
        accounts.add("vera", Role.VIEWER, PASSWORD)
        accounts.add("ana", Role.APPROVER, PASSWORD)
    runner = CliRunner()
    listed = runner.invoke(cli, ["approvals"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0 and ref(MEALS_UID) in listed.output and "meal-schedule" in listed.output
    viewer = runner.invoke(cli, ["approve", ref(MEALS_UID), "--as", "vera"])
    assert viewer.exit_code == 1 and "vera is a viewer" in viewer.output
    nobody = runner.invoke(cli, ["approve", ref(MEALS_UID), "--as", "mallory"])
    assert nobody.exit_code == 1 and "no active account 'mallory'" in nobody.output
    ok = runner.invoke(cli, ["approve", ref(MEALS_UID), "--as", "ana"])
    assert ok.exit_code == 0 and "meal-schedule: awaiting approval (1 of 2 approvals)" in ok.output
    no = runner.invoke(cli, ["reject", MEALS_UID, "--as", "ana", "--reason", "duplicate of yesterday's"])
    assert no.exit_code == 0 and "meal-schedule: rejected" in no.output
    unknown = runner.invoke(cli, ["approve", "nonesuch", "--as", "ana"])
    assert unknown.exit_code == 1 and "no event 'nonesuch'" in unknown.output
    assert states(env, "meal-schedule")[("sms", "cancelled")] > 0


def test_campaigns_yaml_says_which_approval_and_where(tmp_path: Path) -> None:
    from comms.config import parse_settings
    from comms.errors import ConfigError

    text = (ROOT / "campaigns.yaml").read_text("utf-8")
    with pytest.raises(ConfigError, match=r"campaigns.platform-switch.approval: Input should be 'none', 'one' or"):
        parse_settings(text.replace("approval: one ", "approval: three "))
    with pytest.raises(ConfigError, match="only a press draft takes its own approval"):
        parse_settings(
            text.replace("sms: {template: platform_switch}", "sms: {template: platform_switch, approval: true}")
        )


def test_validate_warns_of_a_mass_send_nobody_approves(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import UNGATED

    monkeypatch.setenv("COMMS_CONFIG", str(UNGATED))
    monkeypatch.setenv("COMMS_TEMPLATES", str(ROOT / "templates"))
    result = CliRunner().invoke(cli, ["validate"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "warning: campaigns.meal-schedule: every event sends to every family in its scope at once" in result.output
    assert "campaigns.show-up" not in result.output  # one student's family: no gate needed
    monkeypatch.setenv("COMMS_CONFIG", str(ROOT / "campaigns.yaml"))
    assert "warning" not in CliRunner().invoke(cli, ["validate"], env={"COLUMNS": "400"}).output
