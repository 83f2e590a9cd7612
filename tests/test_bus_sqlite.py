"""What only the embedded bus has to prove: one reader per group, durable across a reopen."""

from __future__ import annotations

import time

from comms.bus import open_bus
from comms.bus.sqlite import sqlite_path


def test_one_reader_per_group_and_takeover_after_lease(tmp_path) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'b.db'}?lease=1"
    bus = open_bus(url)
    bus.publish_many("t", [(None, b"a"), (None, b"b")])
    first, second = bus.consumer("g", ["t"]), bus.consumer("g", ["t"])
    assert [r.value for r in first.poll(timeout=0.5)] == [b"a", b"b"]
    assert second.poll(timeout=0.3) == []  # first holds the group
    time.sleep(1.2)  # first dies without committing
    assert [r.value for r in second.poll(timeout=0.5)] == [b"a", b"b"]
    first.commit([])  # nothing to commit: harmless
    for c in (first, second):
        c.close()
    bus.close()


def test_url_paths() -> None:
    assert str(sqlite_path("sqlite:///var/bus.db")) == "var/bus.db"
    assert str(sqlite_path("sqlite:////abs/bus.db")) == "/abs/bus.db"
