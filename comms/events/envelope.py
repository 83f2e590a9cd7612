"""CloudEvents 1.0 envelope, structured JSON mode, and the one function that parses bytes into an Event."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from comms.errors import EventValidationError
from comms.events.models import EVENT_TYPES, EventData

MAX_EVENT_BYTES = 256 * 1024


def _plausible_time(t: dt.datetime) -> dt.datetime:
    # Year 1 or 9999 with an offset parses, then overflows when converted to the district's zone: the
    # consumer would crash on it at every restart. The same bounds as every date of the contract.
    if not dt.datetime(2000, 1, 1, tzinfo=dt.UTC) <= t <= dt.datetime(2100, 12, 31, tzinfo=dt.UTC):
        raise ValueError("must be between 2000-01-01 and 2100-12-31")
    return t


class Envelope(BaseModel):
    # CloudEvents allows extension attributes, so unknown top-level keys are kept, not refused.
    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    # ids and sources name files, ledger rows and log lines: a safe character set, no spaces or newlines
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+=~-]{0,255}$")
    source: str = Field(pattern=r"^[!-~]{1,1024}$")
    type: str = Field(min_length=1, max_length=128)
    time: Annotated[AwareDatetime, AfterValidator(_plausible_time)]
    datacontenttype: Literal["application/json"] = "application/json"
    subject: str | None = Field(default=None, pattern=r"^[^\x00-\x1f\x7f]{0,256}$")
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    source: str
    type: str
    time: dt.datetime
    data: EventData  # of the model EVENT_TYPES names for `type`
    raw: bytes
    digest: str = ""  # of the canonical JSON: the same event resent, whatever its spacing, has the same

    @property
    def key(self) -> str:
        """Partition key, as the event's type declares it."""
        return self.data.key

    @property
    def uid(self) -> str:
        # CloudEvents makes (source, id) unique, not id alone.
        return f"{self.source}#{self.id}"


def _describe(err: ValidationError, prefix: str = "") -> tuple[str, str | None]:
    parts = []
    first_field = None
    for e in err.errors(include_url=False)[:5]:
        loc = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        if prefix and not e["loc"]:
            loc = prefix.rstrip(".")
        first_field = first_field or loc or None
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "field required"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    extra = len(err.errors()) - 5
    if extra > 0:
        parts.append(f"and {extra} more")
    return "; ".join(parts), first_field


def load_json(text: str) -> Any:
    """json.loads, with every way it can fail as one EventValidationError saying where: a syntax
    error, nesting too deep, a number too long for Python. Each would otherwise crash a consumer on
    every restart (a poison pill), or `comms publish` with a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventValidationError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # {"a": {"a": ... thousands deep
        raise EventValidationError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # a number of more than 4300 digits: Python's limit on int parsing
        raise EventValidationError(f"invalid JSON: {str(exc).split(';')[0]}") from None


def validate_data(type_: str, data: Any) -> EventData:
    """The `data` of an event of `type_`, validated by its model; EventValidationError names the field."""
    model = EVENT_TYPES.get(type_)
    if model is None:
        known = ", ".join(sorted(EVENT_TYPES))
        raise EventValidationError(f"type: unknown event type {type_!r} (known: {known})", "type")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        reason, field = _describe(exc, prefix="data.")
        raise EventValidationError(reason, field) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise EventValidationError(f"data: {exc.__class__.__name__}: {exc}") from None


def parse_event(raw: bytes | str) -> Event:
    """Parse and validate one event. Raises EventValidationError whose reason names the field."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventValidationError(f"event is {len(raw)} bytes, more than the {MAX_EVENT_BYTES} allowed")
    try:
        text = raw.decode("utf-8")  # the contract is UTF-8; json.loads(bytes) would guess
    except UnicodeDecodeError as exc:
        raise EventValidationError(f"event is not UTF-8: {exc.reason} at byte {exc.start}") from None
    doc = load_json(text)
    if not isinstance(doc, dict):
        raise EventValidationError(f"event must be a JSON object, not {type(doc).__name__}")
    try:
        env = Envelope.model_validate(doc)
    except ValidationError as exc:
        reason, field = _describe(exc)
        raise EventValidationError(reason, field) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a validator met what it cannot compare
        raise EventValidationError(f"envelope: {exc.__class__.__name__}: {exc}") from None
    data = validate_data(env.type, env.data)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return Event(id=env.id, source=env.source, type=env.type, time=env.time, data=data, raw=raw, digest=digest)


def conflicting_duplicate(event: Event) -> EventValidationError:
    """The error for an event whose id was handled before with another body: a correction sent under
    the old id would otherwise be taken for a retry and dropped without a word."""
    return EventValidationError(
        f"id: conflicting duplicate: event {event.id!r} from {event.source!r} was already handled with a "
        "different body; send a correction under a new id",
        "id",
    )


def make_event(type_: str, data: dict[str, Any], *, id: str, source: str, time: str) -> bytes:
    """Build the structured-mode JSON bytes of one event (used by the demo and the tests)."""
    doc = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": type_,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    }
    return json.dumps(doc, ensure_ascii=False, default=str).encode("utf-8")
