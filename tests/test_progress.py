"""Progress of long work: a summary line every few seconds in logs (bars on a terminal are rich's)."""

from __future__ import annotations

import logging

import pytest

from comms.progress import LogLines


def test_log_lines_say_done_of_total_and_the_rate_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    p = LogLines(every=5.0, clock=lambda: now[0])
    p.task("sms", 200_000)
    p.task("sms", 89_412)  # a second event adds its families
    with caplog.at_level(logging.INFO, logger="comms.progress"):
        p.advance("sms", 5_000)
        assert not caplog.records  # not yet five seconds
        now[0] = 5.0
        p.advance("sms", 5_000)
        now[0] = 7.0
        p.advance("sms", 279_412)
        p.close()
        short = LogLines(every=5.0, clock=lambda: now[0])
        short.task("email", 10)
        short.advance("email", 10)
        short.close()  # done in under five seconds: no line
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "progress: sms 10,000 of 289,412 (3%), 2,000/s",
        "progress: sms 289,412 of 289,412 (100%), 139,706/s",
    ]
