"""The one place the pipeline reads the time of day.

Quiet hours, the daily cap's day, the ledger's timestamps and the events the pipeline publishes all
take a `Clock` (a callable returning an aware datetime). Production runs on `system_clock`; a test
injects a fixed or settable one, and a process started by a test gets one through COMMS_TEST_NOW.
Durations that never depend on the hour (back-off, rate limits, leases) use time.monotonic().
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping

from comms.errors import ConfigError

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def running_from(start: dt.datetime) -> Clock:
    """A clock that reads `start` now and advances in real time from there: a process a test starts
    sees the test's hour of the day, while the crash-age and release logic still see time pass."""
    origin = time.monotonic()
    return lambda: start + dt.timedelta(seconds=time.monotonic() - origin)


def clock_from_env(environ: Mapping[str, str]) -> Clock:
    """COMMS_TEST_NOW (ISO 8601 with an offset) for tests, else the system clock."""
    value = environ.get("COMMS_TEST_NOW")
    if not value:
        return system_clock
    try:
        start = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"COMMS_TEST_NOW={value!r} is not an ISO 8601 date and time") from None
    if start.tzinfo is None:
        raise ConfigError(f"COMMS_TEST_NOW={value!r} needs an offset, e.g. 2026-11-24T12:00:00-05:00")
    return running_from(start)
