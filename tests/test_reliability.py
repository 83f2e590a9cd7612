"""The reliability suite: crashes, provider faults and floods, counted at the local Twilio and SendGrid
servers (what families would receive), never in the ledger.

Sizes are small so the suite stays fast; `pytest tests/test_reliability.py --scale 10` runs them ten
times bigger (bench/README.md has the figures of such runs).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from comms.app import App
from comms.dev.demo import sample_events
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.events import parse_event
from tests.conftest import (
    MEALS,
    NOON,
    ROOT,
    SWITCH,
    Clock,
    copies,
    env_vars,
    make_env,
    provider_env,
    run_consumers,
)

PII = [
    (re.compile(r"\+1786\d{7}"), "a full phone number"),
    (re.compile(r"parent\d+@example\.org", re.I), "an e-mail address"),
    (re.compile(r"\b(Student|Parent)\d+\b"), "a name"),
]


def assert_no_pii(text: str) -> None:
    for pattern, what in PII:
        found = pattern.search(text)
        assert found is None, f"the log holds {what}: {found.group(0) if found else ''}"


def test_kill_9_ten_times_during_a_fanout(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid], scale: float, ledger_target: str
) -> None:
    """kill -9 of both consumers at random points, ten times, restarting each time: every guardian
    gets exactly one SMS and one e-mail per event. On both ledger engines."""
    tw, sg = providers
    families = int(1500 * scale)
    # e-mail requests take 0.1 s, so kills also land between SendGrid accepting a request and the ledger
    sg.faults.slow_rate, sg.faults.slow_seconds = 1.0, 0.1
    env = make_env(tmp_path, families, COMMS_BUS=f"sqlite:///{tmp_path / 'bus.db'}?lease=1", COMMS_LEDGER=ledger_target)
    proc_env = {
        **os.environ,
        **env_vars(env),
        **provider_env(tw, sg, rate="1500"),
        "COMMS_TEST_NOW": NOON.isoformat(),
        "COMMS_SENDGRID_RECONCILE_AFTER": "0",  # the local server's activity records do not lag
    }
    app = App.open(env)
    app.bus.publish_many(env.topic, [(None, SWITCH), (None, MEALS)])
    app.close()
    logs = tmp_path / "consumers.log"
    expected = 2 * families  # two events, each to every family

    def start(name: str) -> subprocess.Popen[bytes]:
        with open(logs, "ab") as f:
            return subprocess.Popen(
                [sys.executable, "-m", f"consumers.{name}"], env=proc_env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
            )

    rng = random.Random(2020)
    procs = {name: start(name) for name in ("sms", "email")}
    at_kills: list[tuple[int, int]] = []
    try:
        for _ in range(10):
            # kill once the restarted consumers are sending again (their start-up time varies with the
            # machine's load: on a busy one every kill landed before the first message), then at random
            sent = len(tw.messages) + len(sg.deliveries)
            until = time.monotonic() + 30
            while len(tw.messages) + len(sg.deliveries) == sent < 2 * expected and time.monotonic() < until:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))
            for p in procs.values():
                p.kill()
                p.wait()
            at_kills.append((len(tw.messages), len(sg.deliveries)))
            procs = {name: start(name) for name in procs}
        deadline = time.monotonic() + 120 * scale
        while len(tw.messages) < expected or len(sg.deliveries) < expected:
            assert time.monotonic() < deadline, logs.read_text()[-3000:]
            assert all(p.poll() is None for p in procs.values()), logs.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(1.0)  # anything sent twice would arrive now
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=30) for p in procs.values()] == [0, 0]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    log_text = logs.read_text()
    assert any(0 < s < expected for s, _ in at_kills), at_kills  # kills landed mid-fan-out
    for fake in (tw, sg):
        per = fake.per_recipient()
        assert len(per) == families and set(per.values()) == {2}, fake.stats()  # none lost
        assert fake.stats()["duplicates"] == 0  # no message twice
    assert "reconciled" in log_text  # restarts found rows a kill left in `sending`
    assert_no_pii(log_text)


def test_30_percent_provider_faults_and_slow_answers(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid], scale: float, ledger_target: str
) -> None:
    tw, sg = providers
    families = int(600 * scale)
    for fake in (tw, sg):
        fake.faults.fail_rate, fake.faults.slow_rate, fake.faults.slow_seconds = 0.3, 0.1, 0.2
    run_consumers(make_env(tmp_path, families, COMMS_LEDGER=ledger_target), providers, [SWITCH, MEALS])
    assert tw.errors_sent > 0.2 * 2 * families and sg.errors_sent > 0  # the faults really happened
    for fake in (tw, sg):
        per = fake.per_recipient()
        assert len(per) == families and set(per.values()) == {2}  # everything delivered
        assert fake.stats()["duplicates"] == 0  # nothing twice


def test_flood_of_10000_copies_of_one_event(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid], ledger_target: str, scale: float
) -> None:
    """Half are retries with the same CloudEvent id, half look new: the daily cap holds either way.

    On PostgreSQL each event costs a few network round trips more than on a SQLite file: 2,000
    copies there by default, `--scale 5` for the 10,000 (72 s on the 2-core CI machine)."""
    tw, sg = providers
    env = make_env(tmp_path, 4, COMMS_LEDGER=ledger_target)
    half = 5000 if not ledger_target.startswith("postgresql") else int(1000 * scale)
    workers = run_consumers(env, providers, copies(MEALS, half, same_id=True) + copies(MEALS, half))
    assert all(w.stats["events"] == 2 * half for w in workers)
    for fake in (tw, sg):
        assert set(fake.per_recipient().values()) == {3}  # daily_cap.normal, per guardian and channel
        assert len(fake.per_recipient()) == 4


def test_1000_threshold_events_for_one_student(tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]) -> None:
    tw, sg = providers
    env = make_env(tmp_path, 3)
    doc = json.loads(sample_events()[-1])
    doc["data"].update(student_id="T000000", school_id="6001")
    tiers = [("schoolwide", 5), ("targeted", 6), ("intensive", 11)]
    events = []
    for i in range(1000):
        tier, absences = tiers[i % 3]
        doc["id"] = f"flood-{i}"
        doc["data"].update(tier=tier, absences=absences + i // 3)
        events.append(json.dumps(doc).encode())
    run_consumers(env, providers, events)
    assert tw.per_recipient() == {"+17860000000": 3}  # the one guardian, capped at 3 a day
    assert sg.per_recipient() == {"parent0@example.org": 3}
    doc["id"] = "flood-next-day"  # the next day, the cap starts again: 3 of those it held go in the morning
    run_consumers(env, providers, [json.dumps(doc).encode()], clock=Clock(NOON + dt.timedelta(days=1)), names=("sms",))
    assert tw.per_recipient() == {"+17860000000": 6}
    # the day after, 3 more, and the rest of the flood has waited district.daily_cap.hold_days (2) days:
    # it expires; the day after that, only "flood-next-day", held since the day before, is left to go
    for days in (2, 3, 4):
        run_consumers(env, providers, [], clock=Clock(NOON + dt.timedelta(days=days)), names=("sms",))
    assert tw.per_recipient() == {"+17860000000": 10}


def test_mass_messages_render_once_per_language(tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]) -> None:
    tw, sg = providers
    env = make_env(tmp_path, 200)
    app = App.open(env, clock=Clock(NOON), environ=provider_env(tw, sg))
    app.pipeline.chunk = 50
    meals = app.pipeline.handle(parse_event(MEALS), "email")
    doc = json.loads(sample_events()[-1])
    doc["data"].update(student_id="T000000", school_id="6001")
    personal = app.pipeline.handle(parse_event(json.dumps(doc)), "email")
    app.close()
    assert meals["rendered"] == 3 and meals["sent"] == 200  # en, es, ht: not once per family
    assert personal["rendered"] == personal["sent"] == 1  # it names the child: rendered for its family


def test_chunks_with_30_percent_faults(tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]) -> None:
    tw, sg = providers
    for fake in (tw, sg):
        fake.faults.fail_rate = 0.3
    run_consumers(make_env(tmp_path, 200), providers, [MEALS], chunk=50)
    for fake in (tw, sg):
        assert len(fake.per_recipient()) == 200 and fake.stats()["duplicates"] == 0


def test_provider_down_stops_at_the_first_chunk(tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]) -> None:
    tw, sg = providers
    env = make_env(tmp_path, 200)
    app = App.open(env, clock=Clock(NOON), environ={**provider_env(tw, sg), "COMMS_TWILIO_API_URL": tw.url + "/down"})
    app.pipeline.chunk = 50
    app.bus.publish(env.topic, MEALS)
    (worker,) = app.workers(["sms"])
    worker.step()
    counts = Counter()
    for _, _, _, state, n in app.pipeline.ledger.counts("meal-schedule"):
        counts[state] += n
    worker.close()
    app.close()
    assert worker.stats["retries"] == 1 and counts == {"pending": 50}  # the first chunk of four, no more
    assert len(tw.messages) == 0


def test_a_crash_interrupted_email_waits_for_the_activity_feed(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    """Rows left in `sending` younger than reconcile_after are not sent again yet: SendGrid's Email
    Activity feed may not show the request; once it may, they are reconciled, not resent."""
    from comms.errors import TransientDeliveryError

    tw, sg = providers
    env = make_env(tmp_path, 20)
    clock = Clock(NOON)
    app = App.open(env, clock=clock, environ={**provider_env(tw, sg), "COMMS_SENDGRID_RECONCILE_AFTER": "0.5"})
    p = app.pipeline
    event = parse_event(MEALS)
    assert p.handle(event, "email")["sent"] == 20
    # what a kill -9 between SendGrid's 202 and the ledger's `sent` leaves behind
    with p.ledger.conn:
        p.ledger.conn.execute(
            "UPDATE deliveries SET state='sending', updated=? WHERE channel='email'", (clock.now.timestamp(),)
        )
    assert len(sg.deliveries) == 20
    clock.now += dt.timedelta(seconds=0.2)
    with pytest.raises(TransientDeliveryError, match="settle") as exc:
        p.handle(event, "email")
    assert exc.value.retry_after == pytest.approx(0.3) and len(sg.deliveries) == 20
    clock.now += dt.timedelta(seconds=exc.value.retry_after)
    out = p.handle(event, "email")
    app.close()
    assert out["reconciled"] == 20 and len(sg.deliveries) == 20
