"""One contract for every bus backend (see BUS_BACKENDS in conftest)."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest

from comms.bus import DEAD_LETTER_SUFFIX, Bus, open_bus


@pytest.fixture
def t() -> str:
    """A topic of this test's own, so the suite can share one real Kafka (COMMS_TEST_KAFKA)."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def g() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def _drain(consumer, want: int, timeout: float = 10.0) -> list:  # noqa: ANN001
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += consumer.poll(max_records=want - len(got), timeout=0.5)
    return got


def test_publish_then_consume_in_order(bus: Bus, t: str, g: str) -> None:
    for i in range(20):
        bus.publish(t, f"m{i}".encode(), key="student:1")
    with bus.consumer(g, [t]) as c:
        recs = _drain(c, 20)
        c.commit(recs)
    assert [r.value for r in recs] == [f"m{i}".encode() for i in range(20)]
    assert all(r.key == "student:1" for r in recs)


def test_two_groups_each_see_every_event(bus: Bus, t: str, g: str) -> None:
    bus.publish_many(t, [(None, f"e{i}".encode()) for i in range(10)])
    for group in (g + "-press", g + "-sms"):
        with bus.consumer(group, [t]) as c:
            recs = _drain(c, 10)
            c.commit(recs)
            assert sorted(r.value for r in recs) == sorted(f"e{i}".encode() for i in range(10))


def test_restart_resumes_after_committed_and_rereads_uncommitted(bus_url: str, t: str, g: str) -> None:
    bus = open_bus(bus_url)
    # order is promised per key (per partition on Kafka), so one key
    bus.publish_many(t, [("student:1", f"e{i}".encode()) for i in range(6)])
    c = bus.consumer(g, [t])
    first = _drain(c, 6)
    c.commit(first[:4])  # crash after four were done
    c.close()
    bus.close()

    bus = open_bus(bus_url)
    with bus.consumer(g, [t]) as c:
        again = _drain(c, 2)
        assert [r.value for r in again] == [b"e4", b"e5"]
        c.commit(again)
        assert c.poll(timeout=0.3) == []
    assert bus.lag(g, t) == (6, 6)
    bus.close()


def test_rewind_redelivers_uncommitted(bus: Bus, t: str, g: str) -> None:
    bus.publish_many(t, [("k", b"a"), ("k", b"b")])
    with bus.consumer(g, [t]) as c:
        recs = _drain(c, 2)
        c.commit(recs[:1])
        c.rewind()
        assert [r.value for r in _drain(c, 1)] == [b"b"]


def test_dead_letter_keeps_bytes_and_reason(bus: Bus, t: str, g: str) -> None:
    bus.publish(t, b"{not json")
    with bus.consumer(g, [t]) as c:
        (rec,) = _drain(c, 1)
        bus.dead_letter(rec, "invalid JSON: Expecting property name", g)
        c.commit([rec])
    with bus.consumer(g + "-inspect", [t + DEAD_LETTER_SUFFIX]) as c:
        (dl,) = _drain(c, 1)
    assert dl.value == b"{not json"
    assert dl.headers["reason"].startswith("invalid JSON")
    assert dl.headers["consumer_group"] == g
    assert dl.headers["source_topic"] == t


def _publisher(url: str, t: str, n: int, tag: str) -> None:
    b = open_bus(url)
    for i in range(n):
        b.publish(t, f"{tag}-{i}".encode(), key=tag)  # one key: one partition, so order holds
    b.close()


def test_several_processes_publish_at_once(bus_url: str, t: str, g: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_publisher, args=(bus_url, t, 100, f"p{n}")) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    bus = open_bus(bus_url)
    with bus.consumer(g, [t]) as c:
        recs = _drain(c, 400)
    bus.close()
    assert len({r.value for r in recs}) == 400
    for tag in ("p0", "p1", "p2", "p3"):  # each publisher's own order is kept
        mine = [int(r.value.decode().split("-")[1]) for r in recs if r.value.decode().startswith(tag + "-")]
        assert mine == list(range(100))
