"""The `data` of each event type: the public contract other district systems produce.

Free text would reach families untranslated, so whatever a family-facing message says is a code
(`reason`, `eligibility`, `meals`, `days`) that the templates translate. A free-text field a family
or reporter reads (`program`, `reason_detail`) is a LocalText: its translations travel with the event
(`{"en": ..., "es": ...}`), and a language the event does not carry gets the glossary's phrase, never
the English.

Each type also states its facts (what every rendering of it must carry, comms/render/facts.py) and
until when its news is still true (`expires`): a consumer catching up after an outage never texts a
family news that is past.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, model_validator

Lang = Literal["en", "es", "ht"]  # the languages a family or reporter may read
GRADE_CODES: tuple[str, ...] = ("PK", "KG", *(f"{n:02d}" for n in range(1, 13)))
GradeCode = Literal["PK", "KG", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"]
WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
#: a CloudEvent id, as the envelope allows it
EventId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+=~-]{0,255}$")]


def _printable(s: str) -> str:
    # Control characters break SMS encoding and terminal output; newlines and tabs are fine.
    if any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 for c in s):
        raise ValueError("must not contain control characters")
    return s


ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True), AfterValidator(_printable)
]
LongText = Annotated[
    str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True), AfterValidator(_printable)
]


def _plausible(d: dt.date) -> dt.date:
    # A typo such as 2202 or 1920 must not become a message promising a date nobody meant.
    if not dt.date(2000, 1, 1) <= d <= dt.date(2100, 12, 31):
        raise ValueError("date must be between 2000-01-01 and 2100-12-31")
    return d


Date = Annotated[dt.date, AfterValidator(_plausible)]


def _local(t: dt.time) -> dt.time:
    # Pick-up hours are the district's local time: an offset would make "4 p.m." ambiguous, and an
    # aware time cannot be compared with a naive one (the check below would crash, not reject).
    if t.tzinfo is not None:
        raise ValueError("must be a local time of day without an offset (the district's time zone applies)")
    return t


LocalTime = Annotated[dt.time, AfterValidator(_local)]


def _https(url: HttpUrl) -> HttpUrl:
    # links reach families and reporters: only https, never a script or a downgrade
    if url.scheme != "https":
        raise ValueError("must be an https:// URL")
    return url


HttpsUrl = Annotated[HttpUrl, AfterValidator(_https)]


def _has_english(v: dict[str, str]) -> dict[str, str]:
    if "en" not in v:
        raise ValueError("the English text ('en') is required: the English press draft prints it")
    return v


#: free text in English (a plain string) or in several languages ({"en": ..., "es": ..., "ht": ...})
LocalShort = ShortText | Annotated[dict[Lang, ShortText], AfterValidator(_has_english)]
LocalLong = LongText | Annotated[dict[Lang, LongText], AfterValidator(_has_english)]


def in_language(value: str | dict[str, str] | None, lang: str) -> str | None:
    """A LocalText in `lang`, or None when the event does not carry that language."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if lang == "en" else None
    return value.get(lang)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """One fact every rendering of an event must carry, in the language's own format
    (comms/render/facts.py writes it: a date as that language writes dates, grades as "6-12")."""

    name: str  # the data field, for the error line
    kind: Literal["date", "time", "text", "grades", "number", "url", "school"]
    value: Any
    brief: bool = True  # False: only the long renderings (e-mail, press draft, not an SMS) must carry it


SchoolYear = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{4}$")]


def _in_school_year(school_year: str, day: dt.date, field: str) -> None:
    """A school year runs July 1 to June 30 (Florida's, as most states'): 2020-2021 holds the
    days from 2020-07-01 to 2021-06-30, and no record outside them may be counted under it."""
    first, second = (int(y) for y in school_year.split("-"))
    if second != first + 1:
        raise ValueError(f"school_year {school_year!r} must be two consecutive years, e.g. {first}-{first + 1}")
    if not dt.date(first, 7, 1) <= day <= dt.date(second, 6, 30):
        raise ValueError(
            f"{field} {day.isoformat()} is not in school year {school_year} ({first}-07-01 to {second}-06-30)"
        )


if TYPE_CHECKING:
    from comms.config import Campaign


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """Whom an event concerns: the students of some grades and/or schools (None: all), or one student."""

    grades: frozenset[str] | None = None
    schools: frozenset[str] | None = None
    student: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RosterRef:
    """An id an event names, that the roster must know: `field` is where, for the error."""

    field: str
    kind: Literal["school", "student"]
    id: str


class EventData(BaseModel):
    """The `data` of one event type. A type declares here what the rest of the code asks of it:
    its partition key, whom it concerns, the roster ids it names, and what it adds to a campaign."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: campaigns of this type must list tiers (attendance thresholds)
    needs_tiers: ClassVar[bool] = False
    #: whether a campaign may send anything for it (False: a record for a consumer to apply)
    sendable: ClassVar[bool] = True

    @property
    def key(self) -> str:
        """Partition key: one student's (or one school's) events stay in order on a partitioned bus."""
        return "district"

    def scope(self) -> Scope | None:
        """Whom the event concerns; None: nobody is sent anything for it (a record to be counted)."""
        return Scope()

    #: the audiences a campaign of this type may select beyond `scope` and `student` (campaigns.yaml
    #: `audience.select`), each with its own scope and facts
    selects: ClassVar[tuple[str, ...]] = ()

    def scope_for(self, select: str) -> Scope | None:
        """Whom a campaign selecting `select` reaches."""
        return self.scope()

    def refs(self) -> list[RosterRef]:
        """The school and student ids the event names."""
        return []

    def enrolment(self) -> tuple[str, str] | None:
        """(student, school) when the event says where a student is enrolled."""
        return None

    def tier_name(self) -> str | None:
        """The intervention tier the event announces, if any (a campaign's hold-out may exclude it)."""
        return None

    def check_campaign(self, cid: str, campaign: Campaign) -> None:
        """Raise ValueError (field, reason) when a campaign cannot take this event."""

    def campaign_context(self, campaign: Campaign, lang: str) -> dict[str, Any]:
        """What the event adds to its campaign's template context."""
        return {}

    #: fields holding proper names that no language translates (a platform's name)
    names: ClassVar[tuple[str, ...]] = ()

    def facts(self, select: str = "scope") -> list[Fact]:
        """What every rendering for the audience `select` must carry (its dates may be stated too)."""
        return []

    def expires(self) -> dt.date | None:
        """The last day (district time) its family messages are still true and useful; None: no end."""
        return None

    def superseded(self) -> str | None:
        """Why none of its messages goes, when a later event about the same subject says more (a higher
        tier crossed in the same batch of records), if so."""
        return None

    def supersedes(self) -> list[str]:
        """CloudEvent ids (same source) of earlier events about the same subject whose messages, where
        still held (quiet hours, the daily cap, approval), this one's replace."""
        return []


class CampaignMismatch(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def _school_refs(field: str, ids: list[str] | None) -> list[RosterRef]:
    return [RosterRef(field=f"{field}[{i}]", kind="school", id=s) for i, s in enumerate(ids or ())]


class _OneStudent:
    """For the types about one student at one school (their fields keep the contract's order)."""

    if TYPE_CHECKING:
        student_id: str
        school_id: str

    @property
    def key(self) -> str:
        return f"student:{self.student_id}"

    def refs(self) -> list[RosterRef]:
        return [
            RosterRef(field="data.student_id", kind="student", id=self.student_id),
            RosterRef(field="data.school_id", kind="school", id=self.school_id),
        ]

    def enrolment(self) -> tuple[str, str] | None:
        return (self.student_id, self.school_id)


class Unchanged(BaseModel):
    """Grades whose platform does not change (in the seed: grades Pre-K-5 stay on K12 for Class
    Connect sessions and coursework): their families are told so too, or they wonder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grades: list[GradeCode] = Field(min_length=1, max_length=14)
    platform: ShortText
    use: LocalShort | None = None  # what the platform stays in use for


class PlatformSwitch(EventData):
    """Grades move from one learning platform to another (the September 2020 K12 -> Teams switch)."""

    grades: list[GradeCode] = Field(min_length=1, max_length=14)
    from_platform: ShortText
    to_platform: ShortText
    effective_date: Date
    schools: list[Identifier] | None = Field(default=None, min_length=1, max_length=1000)
    reason: Literal["cyberattack", "outage", "vendor_issue", "planned", "other"]
    reason_detail: LocalLong | None = None
    review_date: Date | None = None
    instructions_url: HttpsUrl | None = None
    unchanged: list[Unchanged] | None = Field(default=None, min_length=1, max_length=14)

    names = ("from_platform", "to_platform")
    selects = ("unchanged",)  # the families of the grades that stay where they are
    #: without a review date, a switch is news for two weeks after it takes effect
    FRESH_DAYS: ClassVar[int] = 14

    def facts(self, select: str = "scope") -> list[Fact]:
        if select == "unchanged":
            out = [Fact(name="effective_date", kind="date", value=self.effective_date)]
            for i, u in enumerate(self.unchanged or ()):
                out += [
                    Fact(name=f"unchanged[{i}].grades", kind="grades", value=u.grades),
                    Fact(name=f"unchanged[{i}].platform", kind="text", value=u.platform),
                ]
            if self.review_date:
                out.append(Fact(name="review_date", kind="date", value=self.review_date, brief=False))
            return out
        out = [
            Fact(name="effective_date", kind="date", value=self.effective_date),
            Fact(name="grades", kind="grades", value=self.grades),
            Fact(name="to_platform", kind="text", value=self.to_platform),
            Fact(name="from_platform", kind="text", value=self.from_platform),
        ]
        if self.review_date:
            out.append(Fact(name="review_date", kind="date", value=self.review_date, brief=False))
        if self.instructions_url:
            out.append(Fact(name="instructions_url", kind="url", value=str(self.instructions_url)))
        return out

    def expires(self) -> dt.date:
        return self.review_date or self.effective_date + dt.timedelta(days=self.FRESH_DAYS)

    @model_validator(mode="after")
    def _review_after_switch(self) -> PlatformSwitch:
        if self.review_date is not None and self.review_date < self.effective_date:
            raise ValueError("review_date must not be before effective_date")
        both = sorted(set(self.grades) & {g for u in self.unchanged or () for g in u.grades})
        if both:
            raise ValueError(f"unchanged: grades {', '.join(both)} are among the grades that switch")
        return self

    def scope(self) -> Scope:
        return Scope(grades=frozenset(self.grades), schools=frozenset(self.schools) if self.schools else None)

    def scope_for(self, select: str) -> Scope:
        if select != "unchanged":
            return self.scope()
        # no `unchanged` in the event: nobody (frozenset()), not everybody (None)
        grades = frozenset(g for u in self.unchanged or () for g in u.grades)
        return Scope(grades=grades, schools=frozenset(self.schools) if self.schools else None)

    def refs(self) -> list[RosterRef]:
        return _school_refs("data.schools", self.schools)


class MealsSchedule(EventData):
    """Where and when families pick up free meals (grab-and-go, Tuesdays and Thursdays 4-6 p.m.)."""

    meals: list[Literal["breakfast", "lunch", "snack", "supper"]] = Field(min_length=1, max_length=4)
    days: list[Weekday] = Field(min_length=1, max_length=7)
    start_time: LocalTime
    end_time: LocalTime
    # "all", or the sites by id; an empty list would reach nobody while the press draft said "all sites"
    sites: Literal["all"] | Annotated[list[Identifier], Field(min_length=1, max_length=1000)]
    effective_from: Date
    effective_until: Date
    eligibility: Literal["all_children_under_18", "enrolled_students", "free_reduced_eligible"]
    program: LocalShort | None = None

    def facts(self, select: str = "scope") -> list[Fact]:
        return [
            Fact(name="start_time", kind="time", value=self.start_time),
            Fact(name="end_time", kind="time", value=self.end_time),
            Fact(name="effective_until", kind="date", value=self.effective_until),
            Fact(name="effective_from", kind="date", value=self.effective_from, brief=False),
        ]

    def expires(self) -> dt.date:
        return self.effective_until

    @model_validator(mode="after")
    def _ordered(self) -> MealsSchedule:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        if self.effective_until < self.effective_from:
            raise ValueError("effective_until must not be before effective_from")
        if len(set(self.days)) != len(self.days):
            raise ValueError("days must not repeat")
        return self

    def scope(self) -> Scope:
        return Scope(schools=None if self.sites == "all" else frozenset(self.sites))

    def refs(self) -> list[RosterRef]:
        return _school_refs("data.sites", None if self.sites == "all" else self.sites)


class AbsenceThreshold(_OneStudent, EventData):
    """A student's absences crossed an intervention tier named in campaigns.yaml (#ShowUpMDCPS)."""

    needs_tiers = True

    student_id: Identifier
    school_id: Identifier
    absences: int = Field(ge=0, le=366)
    tier: Identifier
    school_year: SchoolYear
    as_of: Date
    learning_mode: Literal["online", "schoolhouse"] | None = None
    #: a higher tier this student crossed in the same batch of records: this tier's notice is not sent
    superseded_by: Identifier | None = None
    #: ids of this student's earlier tier events this school year (from the same source): their
    #: notices still held are not sent
    earlier: list[EventId] = Field(default_factory=list, max_length=20)

    #: a tier notice weeks after the count was taken tells a family a number that is no longer true
    FRESH_DAYS: ClassVar[int] = 14

    @model_validator(mode="after")
    def _year(self) -> AbsenceThreshold:
        _in_school_year(self.school_year, self.as_of, "as_of")
        return self

    def facts(self, select: str = "scope") -> list[Fact]:
        return [
            Fact(name="absences", kind="number", value=self.absences),
            Fact(name="as_of", kind="date", value=self.as_of),
            Fact(name="school_id", kind="school", value=self.school_id),
        ]

    def expires(self) -> dt.date:
        return self.as_of + dt.timedelta(days=self.FRESH_DAYS)

    def scope(self) -> Scope:
        return Scope(student=self.student_id)

    def tier_name(self) -> str:
        return self.tier

    def superseded(self) -> str | None:
        if self.superseded_by is None:
            return None
        return f"superseded: tier {self.superseded_by} crossed at the same time ({self.absences} absences)"

    def supersedes(self) -> list[str]:
        return list(self.earlier)

    def check_campaign(self, cid: str, campaign: Campaign) -> None:
        t = campaign.tier(self.tier)
        if t is None:
            names = ", ".join(x.name for x in campaign.tiers or ())
            raise CampaignMismatch(
                "data.tier", f"data.tier: unknown tier {self.tier!r} (campaigns.{cid}.tiers has: {names})"
            )
        if self.absences < t.min_absences:
            raise CampaignMismatch(
                "data.absences",
                f"data.absences: {self.absences} is below tier {t.name!r} (min_absences {t.min_absences})",
            )

    def campaign_context(self, campaign: Campaign, lang: str) -> dict[str, Any]:
        t = campaign.tier(self.tier)
        if t is None:  # check_campaign refused it before anything was rendered
            return {"tier": None}
        label, actions = t.label.get(lang), t.actions.get(lang)  # type: ignore[call-overload]
        return {"tier": {"name": t.name, "min_absences": t.min_absences, "label": label, "actions": actions}}


class AttendanceRecorded(_OneStudent, EventData):
    """One day's attendance for one student, as the student information system records it.

    A later event with the same student and date (a correction, by CloudEvent `time`) replaces it.
    """

    sendable = False  # counted by the attendance consumer

    record_id: Identifier
    student_id: Identifier
    school_id: Identifier
    date: Date
    category: Literal["present", "excused", "unexcused", "tardy"]
    school_year: SchoolYear
    learning_mode: Literal["online", "schoolhouse"] | None = None

    @model_validator(mode="after")
    def _year(self) -> AttendanceRecorded:
        _in_school_year(self.school_year, self.date, "date")
        if self.date.weekday() >= 5:  # a weekend day is no school day: counting it would inflate absences
            raise ValueError(f"date {self.date.isoformat()} is a {self.date:%A}: attendance is taken on school days")
        return self

    def scope(self) -> None:
        return None  # counted by the attendance consumer, never sent


# -- what the providers report back (comms serve writes these on the feedback topic) -----------------
LedgerKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{7,14}$")]
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class _Report(EventData):
    """Reports are never sent to anyone: the feedback consumer applies them to the ledger."""

    sendable = False

    def scope(self) -> None:
        return None


class ProviderStatus(_Report):
    """A delivery receipt: Twilio's status callback for one message or call."""

    channel: Token
    ledger_key: LedgerKey
    provider_id: Token | None = None
    status: Annotated[str, StringConstraints(pattern=r"^[a-z-]{1,32}$")]
    error_code: Annotated[str, StringConstraints(pattern=r"^\d{1,6}$")] | None = None

    @property
    def key(self) -> str:
        return f"message:{self.ledger_key}"


class ReplyReceived(_Report):
    """A text a family sent to the district's number."""

    channel: Token
    from_number: E164
    body: Annotated[str, StringConstraints(max_length=1600)]
    provider_id: Token
    opt_out_type: Literal["STOP", "START", "HELP"] | None = None  # Twilio Advanced Opt-Out's reading

    @property
    def key(self) -> str:
        return f"phone:{self.from_number}"  # a STOP then a START from one number stay in order


class EmailEvent(_Report):
    """One event of SendGrid's Event Webhook (or a one-click unsubscribe, which is one too)."""

    event: Literal[
        "processed", "deferred", "delivered", "bounce", "dropped", "spamreport", "unsubscribe",
        "group_unsubscribe", "group_resubscribe", "open", "click",
    ]  # fmt: skip
    email: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    ledger_key: LedgerKey | None = None
    event_id: Token
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    asm_group_id: int | None = None

    @property
    def key(self) -> str:
        return f"email:{self.email.lower()}"


#: every event type, one line each: the model declares the rest
EVENT_TYPES: dict[str, type[EventData]] = {
    "platform.switch": PlatformSwitch,
    "meals.schedule": MealsSchedule,
    "attendance.absence-threshold": AbsenceThreshold,
    "attendance.recorded": AttendanceRecorded,
    "provider.status": ProviderStatus,
    "reply.received": ReplyReceived,
    "email.event": EmailEvent,
}
