"""The event contract: each type valid and invalid, with the error naming the field."""

from __future__ import annotations

import copy
import json

import pytest

from comms.dev.demo import demo_events, sample_events
from comms.errors import EventValidationError
from comms.events import (
    MAX_EVENT_BYTES,
    AbsenceThreshold,
    MealsSchedule,
    PlatformSwitch,
    parse_event,
)
from tests.conftest import DELETE, mutated

DOCS = {json.loads(r)["type"]: json.loads(r) for r in [*demo_events(), *sample_events()]}


def _raw(doc: dict) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "type_,model",
    [
        ("platform.switch", PlatformSwitch),
        ("meals.schedule", MealsSchedule),
        ("attendance.absence-threshold", AbsenceThreshold),
    ],
)
def test_each_type_valid(type_: str, model: type) -> None:
    event = parse_event(_raw(DOCS[type_]))
    assert event.type == type_
    assert isinstance(event.data, model)


def _mutate(type_: str, path: str, value: object) -> bytes:
    return mutated(DOCS[type_], path, value)


INVALID = [
    ("platform.switch", "data.grades", ["06", "13"], "data.grades[1]"),
    ("platform.switch", "data.grades", [], "data.grades"),
    ("platform.switch", "data.to_platform", DELETE, "data.to_platform: field required"),
    ("platform.switch", "data.effective_date", "next Tuesday", "data.effective_date"),
    ("platform.switch", "data.effective_date", "2202-09-03", "data.effective_date"),
    ("platform.switch", "data.review_date", "2020-08-01", "review_date must not be before effective_date"),
    ("platform.switch", "data.reason", "aliens", "data.reason"),
    ("platform.switch", "data.instructions_url", "not a url", "data.instructions_url"),
    ("platform.switch", "data.schools", ["bad id!"], "data.schools[0]"),
    ("platform.switch", "data.to_platform", "Teams\x00\x07", "data.to_platform"),
    ("platform.switch", "data.colour", "blue", "data.colour: unknown field"),
    ("meals.schedule", "data.days", ["tuesday", "funday"], "data.days[1]"),
    ("meals.schedule", "data.start_time", "25:00", "data.start_time"),
    ("meals.schedule", "data.end_time", "15:00", "end_time must be after start_time"),
    ("meals.schedule", "data.sites", "some", "data.sites"),
    ("meals.schedule", "data.eligibility", DELETE, "data.eligibility: field required"),
    ("attendance.absence-threshold", "data.absences", -1, "data.absences"),
    ("attendance.absence-threshold", "data.absences", "five", "data.absences"),
    ("attendance.absence-threshold", "data.school_year", "2020", "data.school_year"),
    ("attendance.absence-threshold", "data.student_id", DELETE, "data.student_id: field required"),
    ("attendance.absence-threshold", "specversion", "0.3", "specversion"),
    ("attendance.absence-threshold", "time", "2020-11-20T18:30:00", "time"),
    ("attendance.absence-threshold", "id", "", "id"),
    ("attendance.absence-threshold", "type", "attendance.unknown", "type: unknown event type"),
]


@pytest.mark.parametrize("type_,path,value,expected", INVALID, ids=[f"{t}:{p}" for t, p, _, _ in INVALID])
def test_invalid_names_the_field(type_: str, path: str, value: object, expected: str) -> None:
    with pytest.raises(EventValidationError) as exc:
        parse_event(_mutate(type_, path, value))
    assert expected in str(exc.value)


@pytest.mark.parametrize(
    "raw,expected",
    [
        (b'{"specversion": "1.0", ', "invalid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b" " * (MAX_EVENT_BYTES + 1), "more than the"),
        (b'{"a": ' * 5000, "nested too deeply"),
    ],
)
def test_unparseable(raw: bytes, expected: str) -> None:
    with pytest.raises(EventValidationError, match=expected):
        parse_event(raw)


def test_cloudevents_extensions_are_kept_not_refused() -> None:
    doc = copy.deepcopy(DOCS["meals.schedule"])
    doc["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_event(_raw(doc)).type == "meals.schedule"


def test_key_keeps_one_students_events_together() -> None:
    doc = DOCS["attendance.absence-threshold"]
    assert parse_event(_raw(doc)).key == f"student:{doc['data']['student_id']}"
