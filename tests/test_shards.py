"""A fan-out split into shards that several delivery processes share (COMMS_SHARD_SIZE), counted at the
local Twilio and SendGrid servers: every family once, whoever took which shard, and when one of the
processes is killed mid-fan-out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from comms.app import App
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.errors import EventValidationError
from comms.pipeline.shards import Shard, split
from tests.conftest import (
    MEALS,
    NOON,
    ROOT,
    SWITCH,
    env_vars,
    make_env,
    provider_env,
    run_consumers,
)


def test_shards_cover_the_audience_once_and_their_header_reads_back() -> None:
    parts = split("sms", "meal-schedule", 1234, 500)
    assert [(p.start, p.stop) for p in parts] == [(0, 500), (500, 1000), (1000, 1234)]
    assert all(Shard.parse(p.header()) == p for p in parts)
    assert split("sms", "c", 0, 500) == []
    for bad in ("", "1 sms c 5 4 10", "1 sms c 0 11 10", "2 sms c 0 1 1", "1 sms c x 1 1"):
        with pytest.raises(EventValidationError, match="comms-shard header"):
            Shard.parse(bad)


def test_a_sharded_fan_out_in_one_process_sends_each_family_once(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid], ledger_target: str
) -> None:
    tw, sg = providers
    env = make_env(tmp_path, 230, COMMS_SHARD_SIZE="40", COMMS_LEDGER=ledger_target)
    workers = run_consumers(env, providers, [SWITCH, MEALS])
    assert {w.name for w in workers} == {"sms", "sms-shards", "email", "email-shards"}
    planner = next(w for w in workers if w.name == "sms")
    assert planner.stats["shards"] == 2 * 6 and planner.stats["sent"] == 0  # 230 families: 6 shards per event
    for fake in (tw, sg):
        per = fake.per_recipient()
        assert len(per) == 230 and set(per.values()) == {2}, fake.stats()
        assert fake.stats()["duplicates"] == 0
    run_consumers(env, providers, [SWITCH, MEALS])  # redelivered: the ledger finds every shard done
    assert set(tw.per_recipient().values()) == {2} and tw.stats()["duplicates"] == 0


def test_a_shard_from_another_roster_is_refused(tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]) -> None:
    """A delivery host whose roster differs from the planner's would deliver the wrong slice: it stops."""
    from comms.errors import ConfigError
    from comms.events import parse_event

    env = make_env(tmp_path, 30, COMMS_SHARD_SIZE="10")
    app = App.open(env, environ=provider_env(*providers))
    with pytest.raises(ConfigError, match="every delivery host must hold the same roster"):
        app.pipeline.handle_shard(
            parse_event(MEALS), Shard(channel="sms", campaign="meal-schedule", start=0, stop=10, audience=31)
        )
    app.close()


def _wait_for(check: Callable[[], bool], seconds: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {lg.name}:\n{lg.read_text()[-2500:]}" for lg in logs if lg.exists())
            raise AssertionError(f"timed out waiting for {what}{tails}")
        time.sleep(0.05)


@pytest.mark.postgres
def test_postgresql_restarted_mid_fan_out_loses_nothing(
    tmp_path: Path, providers: tuple[FakeTwilio, FakeSendGrid]
) -> None:
    """The ledger's server is killed (as a crash) in the middle of a fan-out and started again: the
    consumers wait for it with one log line, go on, and every family gets each message once."""
    from comms.dev.postgres import LocalPostgres

    tw, sg = providers
    families = 1500
    sg.faults.slow_rate, sg.faults.slow_seconds = 1.0, 0.05
    pg = LocalPostgres()
    logs = [tmp_path / "sms.log", tmp_path / "email.log"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        env = make_env(tmp_path, families, COMMS_LEDGER=pg.create("comms"))
        proc_env = {
            **os.environ,
            **env_vars(env),
            **provider_env(tw, sg, rate="600"),
            "COMMS_TEST_NOW": NOON.isoformat(),
            "COMMS_SENDGRID_RECONCILE_AFTER": "0",
        }
        app = App.open(env)
        app.bus.publish_many(env.topic, [(None, SWITCH), (None, MEALS)])
        app.close()
        for name, log in zip(("sms", "email"), logs, strict=True):
            with open(log, "ab") as f:
                cmd = [sys.executable, "-m", f"consumers.{name}"]
                procs.append(subprocess.Popen(cmd, env=proc_env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT))
        expected = 2 * families
        _wait_for(lambda: len(tw.messages) >= expected // 4, 60, "a quarter of the SMS", logs)
        pg.kill()
        at_kill = len(tw.messages)
        time.sleep(2.0)
        pg.start()
        _wait_for(lambda: len(tw.messages) >= expected and len(sg.deliveries) >= expected, 120, "every family", logs)
        time.sleep(1.0)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=60) for p in procs] == [0, 0], [lg.read_text()[-2000:] for lg in logs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pg.remove()
    assert at_kill < expected
    for fake in (tw, sg):
        per = fake.per_recipient()
        assert len(per) == families and set(per.values()) == {2}, fake.stats()
        assert fake.stats()["duplicates"] == 0
    text = logs[0].read_text()
    assert "the server cannot be reached" in text and "connected again" in text, text[-3000:]
    assert "Traceback" not in text
