"""Events/s published and consumed on each bus backend. Run on demand, not in the test suite:

    .venv/bin/python bench/bus.py [--events 20000] [--kafka host:port]

Without --kafka, a noida-db broker is started on a free 127.0.0.1 port for the Kafka run.
Each event is a real CloudEvent of the contract (an attendance.absence-threshold, about 400 bytes),
keyed by student as `comms publish` keys it.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
import uuid
from pathlib import Path

from comms.bus import Bus, open_bus
from comms.dev.broker import noida_kafka
from comms.events import make_event


def events(n: int) -> list[tuple[str, bytes]]:
    return [
        (
            f"student:S{i % 5000}",
            make_event(
                "attendance.absence-threshold",
                {
                    "student_id": f"S{i % 5000}",
                    "school_id": "7001",
                    "absences": 5 + i % 7,
                    "tier": "schoolwide",
                    "school_year": "2020-2021",
                    "as_of": "2020-11-20",
                    "learning_mode": "online",
                },
                id=f"bench-{i}",
                source="https://dadeschools.net/sis/attendance",
                time="2020-11-20T18:30:00-05:00",
            ),
        )
        for i in range(n)
    ]


def measure(bus: Bus, items: list[tuple[str, bytes]], batch: int = 500) -> dict[str, float]:
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    single = items[: min(1000, len(items))]
    t = time.perf_counter()
    for k, v in single:
        bus.publish(topic + ".single", v, key=k)
    single_rate = len(single) / (time.perf_counter() - t)

    t = time.perf_counter()
    for i in range(0, len(items), batch):
        bus.publish_many(topic, items[i : i + batch])
    publish_rate = len(items) / (time.perf_counter() - t)

    got = 0
    with bus.consumer(f"bench-{uuid.uuid4().hex[:6]}", [topic]) as c:
        t = time.perf_counter()
        while got < len(items):
            recs = c.poll(max_records=batch, timeout=2.0)
            c.commit(recs)
            got += len(recs)
        consume_rate = len(items) / (time.perf_counter() - t)
    return {"publish_one_acked": single_rate, "publish_batches": publish_rate, "consume_commit": consume_rate}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--kafka", help="host:port of a Kafka to use instead of starting noida-db")
    args = ap.parse_args()
    items = events(args.events)
    print(
        f"{args.events} events of ~{sum(len(v) for _, v in items) // len(items)} bytes; "
        f"{platform.node()} {platform.machine()}, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        hostport = args.kafka or stack.enter_context(noida_kafka(Path(tmp) / "noida"))
        for name, url in (("sqlite", f"sqlite:///{tmp}/bus.db"), ("kafka", f"kafka://{hostport}")):
            with open_bus(url) as bus:
                r = measure(bus, items)
            print(
                f"{name:7} publish (one at a time, acknowledged) {r['publish_one_acked']:>9,.0f} ev/s | "
                f"publish (batches of 500) {r['publish_batches']:>9,.0f} ev/s | "
                f"consume + commit (batches of 500) {r['consume_commit']:>9,.0f} ev/s"
            )


if __name__ == "__main__":
    main()
