"""Delivery end to end: bus -> pipeline -> the official Twilio and SendGrid SDKs -> local servers of their APIs.

Every count here is taken at the fake provider (what a family would receive), not in the ledger.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from comms.app import App, Env
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.worker import run
from tests.conftest import (
    MEALS,
    MIAMI,
    NOON,
    ROOT,
    SWITCH,
    Clock,
    copies,
    env_vars,
    make_env,
    provider_env,
    reap,
    sigterm,
)


def deliver(
    env: Env, providers: tuple[FakeTwilio, FakeSendGrid], events: list[bytes], clock: Clock | None = None
) -> App:
    tw, sg = providers
    app = App.open(env, clock=clock or Clock(NOON), environ=provider_env(tw, sg))
    app.bus.publish_many(env.topic, [(None, e) for e in events])
    workers = app.workers()
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    return app


def test_fanout_with_20_percent_faults_serves_every_guardian_once(tmp_path: Path, providers) -> None:  # noqa: ANN001
    tw, sg = providers
    for fake in (tw, sg):
        fake.faults.fail_rate, fake.faults.slow_rate, fake.faults.slow_seconds = 0.2, 0.05, 0.2
    env = make_env(tmp_path, 600)
    app = deliver(env, providers, [SWITCH, MEALS])
    app.close()
    assert tw.errors_sent > 50 and sg.errors_sent > 0  # the faults really happened
    phones, emails = tw.per_recipient(), sg.per_recipient()
    assert len(phones) == 600 and set(phones.values()) == {2}  # two events, each number exactly once per event
    assert len(emails) == 600 and set(emails.values()) == {2}


def test_opted_out_numbers_get_nothing(tmp_path: Path, providers, environ) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from comms.cli import app as cli

    tw, _ = providers
    env = make_env(tmp_path, 30, COMMS_LEDGER=str(environ.ledger))
    csv = tmp_path / "optouts.csv"
    csv.write_text(
        "channel,address,reason\nsms,+17860000001,STOP\nsms,+17860000002,STOP\nemail,PARENT3@example.org,"
        "unsubscribed\nfax,123,?\n",
        "utf-8",
    )
    result = CliRunner().invoke(cli, ["suppress", "import", str(csv)])
    assert "3 added" in result.output and "skipped" in result.output and result.exit_code == 1
    tw.opted_out.add("+17860000004")  # replies STOP at the provider: Twilio answers 21610
    app = deliver(env, providers, [MEALS])
    deliver(env, providers, copies(SWITCH, 1))
    app.close()
    sent_to = tw.per_recipient()
    assert "+17860000001" not in sent_to and "+17860000002" not in sent_to and "+17860000004" not in sent_to
    assert len(sent_to) == 27 and set(sent_to.values()) == {2}
    attempts_to_4 = sum(1 for m in tw.messages if m["to"] == "+17860000004")
    assert attempts_to_4 == 0  # 21610 the first time, then on the suppression list: never tried again
    _, sg = providers
    assert "parent3@example.org" not in sg.per_recipient()


def test_quiet_hours_defer_then_release(tmp_path: Path, providers) -> None:  # noqa: ANN001
    tw, sg = providers
    clock = Clock(dt.datetime(2020, 9, 2, 22, 30, tzinfo=MIAMI))
    env = make_env(tmp_path, 20)
    app = deliver(env, providers, [MEALS, SWITCH], clock)
    # 22:30: the emergency switch goes at once, the meal schedule waits; e-mail is not held
    assert len(tw.messages) == 20 and all("Microsoft Teams" in m["body"] for m in tw.messages)
    assert len(sg.per_recipient()) == 20 and set(sg.per_recipient().values()) == {2}
    workers = app.workers(["sms"])
    clock.now = dt.datetime(2020, 9, 3, 7, 59, tzinfo=MIAMI)
    workers[0].step()
    assert len(tw.messages) == 20
    clock.now = dt.datetime(2020, 9, 3, 8, 0, tzinfo=MIAMI)
    workers[0].step()
    workers[0].close()
    app.close()
    assert len(tw.messages) == 40 and set(tw.per_recipient().values()) == {2}


def test_daily_cap_holds_under_100_copies(tmp_path: Path, providers) -> None:  # noqa: ANN001
    tw, sg = providers
    env = make_env(tmp_path, 10)
    app = deliver(env, providers, copies(MEALS, 100, same_id=True) + copies(MEALS, 100))
    app.close()
    assert set(tw.per_recipient().values()) == {3} and set(sg.per_recipient().values()) == {3}  # daily_cap.normal


def test_the_cap_holds_the_rest_for_the_next_days_window_then_they_expire(tmp_path: Path, providers) -> None:  # noqa: ANN001
    """11 different events on one day: 3 go (daily_cap.normal), 3 more the next morning and 3 the
    morning after; the last 2, still over the cap after district.daily_cap.hold_days (2), expire,
    saying why: none is dropped unsaid."""
    tw, sg = providers
    env = make_env(tmp_path, 10)
    clock = Clock(NOON)
    app = deliver(env, providers, copies(MEALS, 11), clock)
    assert set(tw.per_recipient().values()) == {3} and set(sg.per_recipient().values()) == {3}
    workers = app.workers(["sms", "email"])
    clock.now = dt.datetime(2020, 9, 3, 7, 59, tzinfo=MIAMI)  # quiet hours: nothing yet
    run(workers, until_idle=True)
    assert set(tw.per_recipient().values()) == {3}
    clock.now = dt.datetime(2020, 9, 3, 8, 0, tzinfo=MIAMI)  # the next day's window
    run(workers, until_idle=True)
    assert set(tw.per_recipient().values()) == {6} and set(sg.per_recipient().values()) == {6}
    clock.now = dt.datetime(2020, 9, 4, 8, 0, tzinfo=MIAMI)
    run(workers, until_idle=True)
    for w in workers:
        w.close()
    details = app.pipeline.ledger.details("meal-schedule")
    app.close()
    assert set(tw.per_recipient().values()) == {9} and set(sg.per_recipient().values()) == {9}
    expired = {(ch, why): n for ch, st, why, n in details if st == "expired"}
    why = "daily_cap: 3 per day; held since 2020-09-02, 2 day(s) at most"
    assert expired == {("sms", why): 20, ("email", why): 20}


def test_email_batches_never_exceed_1000(tmp_path: Path, providers) -> None:  # noqa: ANN001
    _, sg = providers
    env = make_env(tmp_path, 2500)
    app = deliver(env, providers, [MEALS])
    app.close()
    assert max(sg.batches) <= 1000 and sum(sg.batches) == 2500
    assert len(sg.per_recipient()) == 2500 and set(sg.per_recipient().values()) == {1}


def test_kill_9_of_the_sms_consumer_mid_fanout_then_restart(tmp_path: Path, providers) -> None:  # noqa: ANN001
    tw, sg = providers
    families = 1200
    # lease=3: the restarted consumer takes the group over 3 s after the kill (30 s by default)
    env = make_env(
        tmp_path, families, COMMS_TEST_NOW=NOON.isoformat(), COMMS_BUS=f"sqlite:///{tmp_path / 'bus.db'}?lease=3"
    )
    proc_env = {**os.environ, **env_vars(env), **provider_env(tw, sg, rate="400"), "COMMS_TEST_NOW": NOON.isoformat()}
    app = App.open(env)
    app.bus.publish(env.topic, MEALS)
    app.close()
    log = tmp_path / "sms.log"

    def start() -> subprocess.Popen:
        with open(log, "ab") as f:
            return subprocess.Popen(
                [sys.executable, "-m", "consumers.sms"], env=proc_env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
            )

    proc = start()
    try:
        deadline = time.monotonic() + 60
        while len(tw.messages) < families // 4:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill = len(tw.messages)
        proc = start()
        deadline = time.monotonic() + 90
        while len(tw.per_recipient()) < families:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)  # anything sent twice would arrive now
        assert sigterm(proc) == 0
    finally:
        reap(proc)
    assert at_kill < families  # the kill landed mid-fan-out
    per = tw.per_recipient()
    assert len(per) == families  # zero lost
    assert set(per.values()) == {1}, [n for n, c in per.items() if c > 1][:5]  # zero duplicates
    assert "reconciled" in log.read_text() or at_kill == len(tw.messages)
