"""Three delivery hosts: processes in network namespaces of their own, reaching PostgreSQL, the Kafka
broker and the local Twilio and SendGrid servers over a link each (tests/netns.py). One district
event is planned into shards that the three share; mid-fan-out one host's link is cut, or
(separately) its process is killed with SIGKILL. The other two finish its shards once its claims
expire, and the count at the provider servers is every family exactly once.

6,000 families by default, so the suite stays fast; `--scale 5` is the 30,000 families of a big
district event (both cases pass in 263 s on the 2-core CI machine, bench/README.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comms.app import App
from comms.dev.postgres import LocalPostgres
from comms.dev.servers import FakeSendGrid, FakeTwilio
from comms.ledger import Ledger
from tests import netns
from tests.conftest import MEALS, NOON, ROOT, env_vars, free_port, make_env, noida_kafka, provider_env
from tests.test_shards import _wait_for

# On demand, not in the default run: against noida-db, after the broker restart these tests need
# (noida-db never expires a dead member), the groups sometimes rebalanced without end on the loaded
# 2-core CI machine and the run timed out (CI, 2026-11-26, the clock at 19:00 UTC; it passed at
# 08:30 and every run by hand). A real Kafka expires the member itself: COMMS_TEST_KAFKA.
ON_DEMAND = "COMMS_TEST_MULTIHOST"

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.postgres,
    pytest.mark.skipif(netns.why_not() is not None, reason=str(netns.why_not())),
    pytest.mark.skipif(
        not os.environ.get(ON_DEMAND), reason=f"on demand: {ON_DEMAND}=1 (noida-db's rebalances, see the module)"
    ),
]


@pytest.mark.parametrize("failure", ["cut the link", "kill -9"])
def test_three_hosts_share_one_event_and_lose_nothing_when_one_fails(
    tmp_path: Path, failure: str, scale: float
) -> None:
    families = int(6_000 * scale)
    logs = [tmp_path / f"host{i}.log" for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(netns.network(3))
        tw = stack.enter_context(FakeTwilio(net.server))
        sg = stack.enter_context(FakeSendGrid(net.server))
        sg.faults.slow_rate, sg.faults.slow_seconds = 1.0, 0.02
        pg = LocalPostgres(net.server)
        stack.callback(pg.remove)
        pg.start()
        port = free_port()
        broker = stack.enter_context(contextlib.ExitStack())
        hostport = broker.enter_context(noida_kafka(tmp_path / "broker", port, net.server))
        bus = f"kafka://{hostport}?partitions=3&session_timeout=6&max_poll_interval=20&connect_timeout=2"
        env = make_env(tmp_path, families, COMMS_BUS=bus, COMMS_LEDGER=pg.create("comms"), COMMS_SHARD_SIZE="2000")

        def start(i: int) -> subprocess.Popen[bytes]:
            host_env = {
                **os.environ,
                **env_vars(env),
                **provider_env(tw, sg, rate="0"),
                "COMMS_TEST_NOW": NOON.isoformat(),
                "COMMS_SHARD_SIZE": "2000",
                "COMMS_SENDGRID_RECONCILE_AFTER": "0",
                "COMMS_VAR": str(tmp_path / f"host{i}" / "var"),  # nothing on disk is shared
                "COMMS_OUT": str(tmp_path / f"host{i}" / "out"),
            }
            argv = net.in_host(i, [sys.executable, "-m", "comms.cli", "run", "--only", "sms", "--only", "email"])
            with open(logs[i], "ab") as f:
                return subprocess.Popen(argv, env=host_env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)

        procs += [start(i) for i in range(3)]

        def reap() -> None:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

        stack.callback(reap)
        app = App.open(env)
        app.bus.publish(env.topic, MEALS, key="district")
        app.close()
        _wait_for(lambda: len(tw.messages) >= families // 5, 180, "a fifth of the SMS", logs)
        if failure == "cut the link":
            net.cut(0)
        else:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
        at_failure = (len(tw.messages), len(sg.deliveries))
        # noida-db never expires a member that went silent (tests/test_kafka.py): restarting the broker
        # on its data does, and the other two take the failed host's partitions
        broker.close()
        broker.enter_context(noida_kafka(tmp_path / "broker", port, net.server))
        _wait_for(lambda: len(tw.messages) >= families and len(sg.deliveries) >= families, 300, "every family", logs)
        time.sleep(1.0)  # anything sent twice would arrive now
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=60) for p in procs[1:]] == [0, 0], [lg.read_text()[-2000:] for lg in logs]
        reap()  # the cut-off host is still waiting for its servers
        ledger = Ledger(pg.url("comms"))
        states = {state for *_, state, n in ledger.counts() if n}
        ledger.close()
        stats = [tw.stats(), sg.stats()]
        per = [tw.per_recipient(), sg.per_recipient()]
    assert at_failure[0] < families or at_failure[1] < families  # the failure came mid-fan-out
    for counts, st in zip(per, stats, strict=True):
        assert len(counts) == families and set(counts.values()) == {1}, st  # none lost
        assert st["duplicates"] == 0  # none twice
    assert states <= {"sent"}, states
    texts = [lg.read_text() for lg in logs]
    for text in texts[1:]:
        assert "comms-sms-shards: " in text and "comms-email-shards: " in text  # both took shards
        assert "Traceback" not in text
