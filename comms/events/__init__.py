"""Event contract: CloudEvents envelope + one pydantic model per event type."""

from comms.events.envelope import (
    MAX_EVENT_BYTES,
    Envelope,
    Event,
    conflicting_duplicate,
    load_json,
    make_event,
    parse_event,
)
from comms.events.models import (
    EVENT_TYPES,
    GRADE_CODES,
    WEEKDAYS,
    AbsenceThreshold,
    AttendanceRecorded,
    MealsSchedule,
    PlatformSwitch,
)

__all__ = [
    "EVENT_TYPES",
    "GRADE_CODES",
    "MAX_EVENT_BYTES",
    "WEEKDAYS",
    "AbsenceThreshold",
    "AttendanceRecorded",
    "Envelope",
    "Event",
    "MealsSchedule",
    "PlatformSwitch",
    "conflicting_duplicate",
    "load_json",
    "make_event",
    "parse_event",
]
