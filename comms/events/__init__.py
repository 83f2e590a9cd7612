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
    CampaignMismatch,
    EventData,
    Lang,
    MealsSchedule,
    PlatformSwitch,
    RosterRef,
    Scope,
)

__all__ = [
    "EVENT_TYPES",
    "GRADE_CODES",
    "MAX_EVENT_BYTES",
    "WEEKDAYS",
    "AbsenceThreshold",
    "AttendanceRecorded",
    "CampaignMismatch",
    "Envelope",
    "EventData",
    "Lang",
    "RosterRef",
    "Scope",
    "Event",
    "MealsSchedule",
    "PlatformSwitch",
    "conflicting_duplicate",
    "load_json",
    "make_event",
    "parse_event",
]
