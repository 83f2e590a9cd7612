"""campaigns.yaml: the communications office's configuration, validated once at the edge.

An error names the file, the key path and the line, e.g.
`campaigns.yaml:42: campaigns.show-up.channels.sms.template: field required`.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from comms.channels import REGISTRY, Options, channel_class, channel_classes
from comms.channels.base import Name
from comms.errors import ConfigError
from comms.events import EVENT_TYPES
from comms.events.models import GradeCode, Lang

Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Social(_Model):
    twitter: list[str] = []
    instagram: list[str] = []
    facebook: list[str] = []


class QuietHours(_Model):
    start: dt.time = dt.time(21, 0)
    end: dt.time = dt.time(8, 0)


class DailyCap(_Model):
    """At most this many messages per guardian, channel and day (district time), however many events;
    the rest wait for the next day."""

    normal: int = Field(default=3, ge=1, le=100)
    emergency: int = Field(default=10, ge=1, le=100)
    #: a message over the cap waits for the next day's window (when quiet hours end), day after day,
    #: for at most this many days; then it expires (a flood never drips out for weeks)
    hold_days: int = Field(default=2, ge=0, le=14)


class Sending(_Model):
    """What a channel's provider account costs and takes, for the console's send plan."""

    price: float = Field(ge=0, le=100)  # per unit the channel bills: an SMS segment, an e-mail, a call
    per_second: float = Field(gt=0, le=1_000_000)  # messages (SMS: segments) the account sends per second


class Retention(_Model):
    """How long the ledger keeps what identifies a family in a message (its text and address): the
    school year it was sent in, and `keep_days` more (complaints, audits, a late bounce)."""

    school_year_ends: Annotated[str, StringConstraints(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")] = "06-30"
    keep_days: int = Field(default=30, ge=0, le=3650)

    @field_validator("school_year_ends")
    @classmethod
    def _a_day_every_year(cls, v: str) -> str:
        try:
            dt.date(2001, *(int(x) for x in v.split("-")))  # not a leap year: no 02-29
        except ValueError:
            raise ValueError(f"{v!r} is not a day every year has (MM-DD)") from None
        return v


class Links(_Model):
    """Where a message may send a family: https only, to the district's own domains (and their
    subdomains), never through a link shortener, which hides where a link goes (phishing looks like
    that). Always checked in incident mode; `comms validate` refuses a template URL off the list."""

    allow: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")]] = Field(min_length=1)
    shorteners: list[str] = ["bit.ly", "tinyurl.com", "t.co", "goo.gl", "ow.ly", "is.gd", "buff.ly", "rb.gy"]


class Incident(_Model):
    """The week the district is under attack (issue: phishing texts imitate it): every SMS and e-mail
    carries the glossary's `verify` line; links only to `links.allow`; with the website down, texts give
    the phone line instead of links."""

    active: bool = False
    website_down: bool = False


class District(_Model):
    name: Text
    short_name: Text
    office: Text
    address: Text
    phone: Text
    dateline: Text
    timezone: str
    default_language: Lang = "en"
    languages: list[Lang] = Field(min_length=1)
    press_languages: list[Lang] = Field(min_length=1)
    app: Text
    website: Text | None = None
    social: Social = Social()
    quiet_hours: QuietHours = QuietHours()
    daily_cap: DailyCap = DailyCap()
    sms_max_segments: int = Field(default=3, ge=1, le=10)
    sending: dict[str, Sending] = {}
    retention: Retention = Retention()
    #: the district's terms in each language, fixed once (the templates say `g.office`, never a
    #: translation of their own); the fact check refuses the English of a term in another language
    glossary: dict[Name, dict[Lang, Text]] = {}
    #: names that are never translated (M-DCPS, Microsoft Teams, K12...): the language check skips them
    names: list[Text] = []
    links: Links | None = None
    incident: Incident = Incident()
    media_contact: dict[Lang, Text] | None = None  # who reporters call, as the press draft says it

    @field_validator("sending")
    @classmethod
    def _sending_channels(cls, v: dict[str, Sending]) -> dict[str, Sending]:
        if unknown := sorted(set(v) - set(REGISTRY)):
            raise ValueError(f"unknown channel {unknown[0]!r} (known: {', '.join(REGISTRY)})")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as America/New_York)") from None
        return v

    @model_validator(mode="after")
    def _default_in_languages(self) -> District:
        if self.default_language not in self.languages:
            raise ValueError(f"default_language: {self.default_language!r} is not one of languages")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _channels_model() -> type[BaseModel]:
    """campaigns.yaml `channels:`: one optional key per registered channel, each validated by that
    channel's own options model (comms/channels/base.py)."""
    fields: dict[str, Any] = {c.name: (c.options | None, None) for c in channel_classes()}
    return create_model("Channels", __base__=_ChannelsBase, **fields)


class _ChannelsBase(_Model):
    @model_validator(mode="after")
    def _approval(self) -> _ChannelsBase:
        for name, options in self.items():
            if options.approval and not channel_class(name).approval:
                raise ValueError(
                    f"{name}.approval: only a press draft takes its own approval; the campaign's family "
                    "messages wait for `approval: one` or `two` at the campaign's level"
                )
        return self

    def items(self) -> list[tuple[str, Options]]:
        """(channel name, its options) for each channel the campaign uses, in registry order."""
        return [(n, o) for n in REGISTRY if (o := getattr(self, n, None)) is not None]

    def get(self, name: str) -> Options | None:
        options: Options | None = getattr(self, name, None)
        return options


if TYPE_CHECKING:
    Channels = _ChannelsBase
else:
    Channels = _channels_model()


class Audience(_Model):
    # scope: guardians of the students the event covers (its grades, schools or sites);
    # student: the guardians of the event's one student; unchanged (platform.switch): the guardians of
    # the grades the event says stay where they are (`data.unchanged`).
    select: Literal["scope", "student", "unchanged"]
    # household: one message per guardian however many children; student: one per guardian and child.
    per: Literal["household", "student"] = "household"
    # narrow the audience further: only these grades (a band such as PK..05) and/or these schools
    grades: list[GradeCode] | None = Field(default=None, min_length=1)
    schools: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1
    )


class Quote(_Model):
    """Verbatim, attributed and dated: `text` in the language it was said (`original`), and any
    translation beside it, which a draft marks as one."""

    by: Text
    said: dt.date
    original: Lang = "en"
    text: dict[Lang, Annotated[str, StringConstraints(min_length=1, max_length=2000)]]

    @model_validator(mode="after")
    def _original_given(self) -> Quote:
        if self.original not in self.text:
            raise ValueError(f"text: the words as said ({self.original}) are missing")
        return self


class Tier(_Model):
    name: Name
    min_absences: int = Field(ge=1, le=366)
    label: dict[Lang, Text]
    actions: dict[Lang, list[Text]]


class Comparison(_Model):
    """The typical total a tier notice shows beside the child's own (the trials that cut absences told
    parents how their child compares): the district's figure for a typical (median) student of the
    same grade district-wide, or of the same school, so far this school year, as of a date."""

    by: Literal["grade", "school"]
    as_of: dt.date
    typical: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], int] = Field(min_length=1)

    @model_validator(mode="after")
    def _figures(self) -> Comparison:
        if bad := [k for k, n in self.typical.items() if not 0 <= n <= 366]:
            raise ValueError(f"typical.{bad[0]}: a number of absences from 0 to 366")
        codes = get_args(GradeCode)
        if self.by == "grade" and (bad := sorted(set(self.typical) - set(codes))):
            raise ValueError(f"typical: {bad[0]!r} is not a grade ({', '.join(codes)})")
        return self


class Campaign(_Model):
    title: Text
    event_type: str
    priority: Literal["normal", "emergency"] = "normal"
    # how many approvers must say yes before its family messages go (two: two different people);
    # until then they are rendered and held as `awaiting_approval` (comms/approvals.py)
    approval: Literal["none", "one", "two"] = "none"
    hashtag: Annotated[str, StringConstraints(pattern=r"^#\w{1,60}$")] | None = None
    audience: Audience
    channels: Channels  # built from the channel registry
    quote: Quote | None = None
    tiers: list[Tier] | None = None
    realert: bool = False  # alert a tier again after a correction took the count below it
    incident: bool = False  # incident mode for this campaign only (district.incident.active: all)
    # A randomized hold-out: this share of the students who would get a message is a control group,
    # ledgered `held_out`, never sent (to measure whether the messages work). Decided per student
    # once, by a hash of `holdout_seed` (default: the campaign's name) and the student's id.
    holdout: float | None = Field(default=None, gt=0, le=0.5)
    holdout_seed: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    # tiers whose students always get their message (the most absent: the district may not withhold
    # outreach from them)
    holdout_exclude_tiers: list[Name] = []
    # the typical total beside the child's own, in tier notices (personal: `select: student`)
    comparison: Comparison | None = None

    @field_validator("event_type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        known = sorted(t for t, model in EVENT_TYPES.items() if model.sendable)
        if v not in known:
            raise ValueError(f"unknown event type {v!r} (known: {', '.join(known)})")
        return v

    @model_validator(mode="after")
    def _tiers(self) -> Campaign:
        model = EVENT_TYPES[self.event_type]
        if self.audience.select not in ("scope", "student", *model.selects):
            offered = ", ".join(("scope", "student", *model.selects))
            raise ValueError(f"audience.select: {self.event_type} offers {offered}, not {self.audience.select!r}")
        if EVENT_TYPES[self.event_type].needs_tiers and not self.tiers:
            raise ValueError("tiers: an attendance campaign needs its tiers")
        if self.holdout is not None:
            if self.priority == "emergency":
                raise ValueError("holdout: never for an emergency campaign: every family must hear it")
            if self.audience.select != "student":
                raise ValueError("holdout: decided per student, so the audience must be `select: student`")
        if self.comparison is not None and not (self.tiers and self.audience.select == "student"):
            raise ValueError("comparison: for a tier campaign whose audience is `select: student`")
        if unknown := sorted(set(self.holdout_exclude_tiers) - {t.name for t in self.tiers or ()}):
            raise ValueError(f"holdout_exclude_tiers: unknown tier {unknown[0]!r}")
        if self.tiers:
            mins = [t.min_absences for t in self.tiers]
            if mins != sorted(set(mins)):
                raise ValueError("tiers: min_absences must be strictly increasing")
        return self

    def tier(self, name: str) -> Tier | None:
        return next((t for t in self.tiers or () if t.name == name), None)


class Settings(_Model):
    district: District
    campaigns: dict[Name, Campaign] = Field(min_length=1)

    @model_validator(mode="after")
    def _languages_complete(self) -> Settings:
        family, press = set(self.district.languages), set(self.district.press_languages)
        for term, translations in self.district.glossary.items():
            if missing := sorted((family | press) - set(translations)):
                raise ValueError(f"district.glossary.{term}: missing language(s) {', '.join(missing)}")
        if self.district.media_contact and (missing := sorted(press - set(self.district.media_contact))):
            raise ValueError(f"district.media_contact: missing language(s) {', '.join(missing)}")
        if self.district.incident.active or any(c.incident for c in self.campaigns.values()):
            if self.district.links is None:
                raise ValueError("district.links: incident mode needs the allow-list of the district's domains")
            if "verify" not in self.district.glossary:
                raise ValueError("district.glossary.verify: incident mode needs the verification line")
        for cid, c in self.campaigns.items():
            # (where, the languages it must cover, the per-language mapping)
            texts: list[tuple[str, set[Lang], dict[Lang, Any]]] = []
            if c.quote:
                texts.append((f"campaigns.{cid}.quote.text", press, c.quote.text))
            for i, t in enumerate(c.tiers or ()):
                texts.append((f"campaigns.{cid}.tiers[{i}].label", family, t.label))
                texts.append((f"campaigns.{cid}.tiers[{i}].actions", family, t.actions))
            for where, needed, d in texts:
                if missing := sorted(needed - set(d)):
                    raise ValueError(f"{where}: missing language(s) {', '.join(missing)}")
        return self

    def incident(self, campaign: Campaign) -> bool:
        return self.district.incident.active or campaign.incident

    def campaigns_for(self, event_type: str) -> list[tuple[str, Campaign]]:
        return [(cid, c) for cid, c in self.campaigns.items() if c.event_type == event_type]


_PATH_IN_MSG = re.compile(r"^Value error, (?P<path>[A-Za-z0-9_.\[\]-]+): (?P<rest>.*)$", re.S)


def _parse_path(path: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path))


def _node_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node reachable along a pydantic error location."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if pair is None:
                break
            # point at the line that names the key, not where its value starts
            node, line = pair[1], pair[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _loc_str(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping: YAML keeps the last one silently, so a
    second campaign under an existing name would replace the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"line {line}: key {key!r} repeats the one on line {seen[key]}")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None
    return parse_settings(text, str(path))


def parse_settings(text: str, name: str = "campaigns.yaml") -> Settings:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except ConfigError as exc:
        raise ConfigError(f"{name}:{str(exc).removeprefix('line ')}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{name}{line}: invalid YAML: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:  # a NUL or another character YAML does not allow
        at = text[: exc.position].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ConfigError(f"{name}:{at}: invalid YAML: character {char!r} is not allowed") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{name}: invalid YAML: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: must be a mapping with 'district' and 'campaigns'")
    try:
        return Settings.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for e in exc.errors(include_url=False):
            loc = tuple(e["loc"])
            # pydantic puts the model's own name in some locations (e.g. tagged unions); drop non-keys
            msg = (
                "field required"
                if e["type"] == "missing"
                else ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
            )
            # A model-level check reports the key path in its message; point the line at that key.
            if m := _PATH_IN_MSG.match(msg):
                loc = loc + _parse_path(m["path"])
                msg = m["rest"]
            lines.append(f"{name}:{_node_line(root, loc)}: {_loc_str(loc) or '(top)'}: {msg}")
        raise ConfigError("\n".join(lines)) from None
