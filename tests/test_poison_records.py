"""Records another producer wrote straight onto the bus: each class is dead-lettered with its reason,
on both backends, and the event after it is handled. Before, each crashed the consumer, and every
restart died on the same record."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from comms.app import App, Env
from comms.bus import DEAD_LETTER_SUFFIX
from comms.bus.sqlite import sqlite_path
from comms.dev.demo import demo_events
from comms.worker import run
from tests.conftest import MEALS, NOON, ROOT, UNGATED, Clock

Raw = tuple[object, object]  # (value, headers) as the backend stores them


def _event(**changes: object) -> bytes:
    """The meal event with fields of its envelope or data changed, as a producer might send it."""
    doc = json.loads(MEALS)
    for path, value in changes.items():
        node = doc
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    doc["id"] = "poison-" + "-".join(sorted(changes))
    return json.dumps(doc).encode()


def _huge_number() -> bytes:
    doc = json.loads(MEALS)
    doc["id"] = "poison-huge-number"
    return json.dumps(doc).replace('"breakfast"', "9" * 5000, 1).encode()


# class -> (what the SQLite bus stores, what the Kafka bus stores (None: the same value, no headers),
# words the reason must hold)
CLASSES: dict[str, tuple[Raw, Raw | None, str]] = {
    "value is not bytes": (('{"specversion": "1.0"}', "{}"), (None, []), "not bytes|no value"),
    "headers are not JSON": ((MEALS, "not json"), (MEALS, [("source", b"\xff\xfe")]), "header"),
    # (Kafka headers are always name and bytes: the other way to break them is a cut UTF-8 sequence)
    "headers are JSON but not an object of strings": ((MEALS, "[1, 2]"), (MEALS, [("source", b"\xc3")]), "header"),
    "time at year 1 with an offset": ((_event(time="0001-01-01T00:00:00+05:00"), "{}"), None, "time"),
    "time at year 9999 with an offset": ((_event(time="9999-12-31T23:59:59-05:00"), "{}"), None, "time"),
    "a number with thousands of digits": ((_huge_number(), "{}"), None, "4300 digits"),
    "a time of day with an offset": ((_event(data__start_time="16:00+05:00"), "{}"), None, "start_time"),
}


def _write_raw(bus_url: str, topic: str, value: object, headers: object) -> None:
    """Write one record the way a foreign producer would: not through comms' own publish."""
    if bus_url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(bus_url))
        conn.execute(
            "INSERT INTO records(topic, key, value, headers, ts) VALUES (?, NULL, ?, ?, 0)",
            (topic, value, headers if isinstance(headers, str) else "{}"),
        )
        conn.commit()
        conn.close()
        return
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=urlsplit(bus_url).netloc)
    # a tombstone (value None) needs a key
    producer.send(topic, key=b"district", value=value, headers=headers if isinstance(headers, list) else [])
    producer.flush()
    producer.close()


@pytest.mark.parametrize("what", list(CLASSES))
def test_a_poison_record_is_dead_lettered_and_the_next_event_handled(
    what: str, bus_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sqlite_raw, kafka_raw, reason = CLASSES[what]
    env = Env.from_environ(
        {
            "COMMS_BUS": bus_url,
            "COMMS_TOPIC": f"poison.{request.node.callspec.id.replace(' ', '-')[:40]}",
            "COMMS_VAR": str(tmp_path / "var"),
            "COMMS_OUT": str(tmp_path / "out"),
            "COMMS_CONFIG": str(UNGATED),
            "COMMS_TEMPLATES": str(ROOT / "templates"),
        }
    )
    app = App.open(env, clock=Clock(NOON), environ={})
    app.bus.publish(env.topic, demo_events()[0], key="district")  # creates the topic (and the SQLite tables)
    value, headers = sqlite_raw if bus_url.startswith("sqlite") else (kafka_raw or (sqlite_raw[0], []))
    _write_raw(bus_url, env.topic, value, headers)
    app.bus.publish(env.topic, MEALS, key="district")  # the event after the poison
    workers = app.workers(["sms"])
    run(workers, until_idle=True)
    stats = workers[0].stats
    workers[0].close()
    with app.bus.consumer("inspect", [env.topic + DEAD_LETTER_SUFFIX]) as c:
        dead = _poll_all(c.poll)
    sent = {cid: n for cid, ch, _, st, n in _by_campaign(app.pipeline.ledger.counts()) if st == "sent"}
    app.close()
    assert stats["events"] == 2 and stats["dead_lettered"] == 1, stats
    assert len(dead) == 1 and dead[0].headers["consumer_group"] == "comms-sms"
    assert any(word in dead[0].headers["reason"] for word in reason.split("|")), dead[0].headers["reason"]
    # the events on both sides of it went out (the switch to 6-12, and to Pre-K-5 that nothing changes)
    assert sent == {"platform-switch": 5, "platform-unchanged": 4, "meal-schedule": 6}


def _poll_all(poll: Callable[..., list]) -> list:
    out: list = []
    for _ in range(20):
        got = poll(max_records=100, timeout=0.5)
        out += got
        if out and not got:
            break
    return out


def _by_campaign(rows: list[tuple[str, str, str, str, int]]) -> list[tuple[str, str, str, str, int]]:
    merged: dict[tuple[str, str, str], int] = {}
    for cid, ch, _, st, n in rows:
        merged[(cid, ch, st)] = merged.get((cid, ch, st), 0) + n
    return [(cid, ch, "", st, n) for (cid, ch, st), n in merged.items()]
