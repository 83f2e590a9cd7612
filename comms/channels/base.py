"""What a channel is, declared once on its class, and the interface every provider implements.

A channel class states everything the rest of the code would otherwise branch on (as kombu's
transports state their capabilities and Apprise's plugins their attributes):

    name          the key in campaigns.yaml `channels:` and in the ledger
    consumer      the consumer that runs it (one consumer group each: comms-<consumer>)
    address       the roster field it sends to (phone, email), None for press drafts
    consent       the roster consent it needs (`metadata.<consent>Consent` in OneRoster), None: none
    parts         the template parts it renders (templates/<name>/<template>.<lang>.<part>.j2)
    subject_part  the part whose template sets `subject`, if it has a subject
    audience      "families" (one message per family, in the family's language) or "press" (one per
                  press language)
    quiet_hours   whether it waits out the district's quiet hours (unless emergency)
    daily_cap     whether a message counts against the guardian's daily cap
    options       its block in campaigns.yaml (pydantic): template, approval, and its own settings
    gated         whether its messages wait for the campaign's approvers (`approval: one|two`)
    unit          what its provider bills per message (`units()`: how many), for the send plan

and, as class methods, how it normalises an address for the suppression list, why a family
reading some language cannot get it (`held`), what makes a rendered message unsendable
(`refuse`), and `from_env()`: the provider from its environment variables, or the dry-run outbox.
The pipeline sends through instances; `spec` is the class that declares the channel (the outbox
stands in for a provider without becoming another channel).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from comms.errors import ConfigError, DeliveryError

if TYPE_CHECKING:
    from comms.config import District
    from comms.render import Rendered

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class Options(BaseModel):
    """A campaign's settings for one channel (campaigns.yaml `channels.<name>`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: Name
    approval: bool = False


def retry_after(headers: Any) -> float | None:
    """Seconds from a provider answer's Retry-After header (any mapping with .get), if it has one."""
    try:
        value = headers.get("Retry-After") if headers else None
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    key: str  # ledger key: also the provider-side idempotency reference
    channel: str  # a channel's name
    campaign: str
    event_uid: str
    lang: str
    to: str  # E.164 number, e-mail address, or a press-draft name
    body: dict[str, str]  # rendered parts: txt / html / md
    subject: str | None = None
    priority: str = "normal"
    meta: dict[str, str] = field(default_factory=dict)
    guardian: str | None = None  # whose daily cap this counts against
    expires: str | None = None  # the last day (ISO, district time) its news is true: a later release expires it
    capped: str | None = None  # the first day (ISO, district time) the daily cap held it back


#: (budget name, sends wanted, rate per second, burst) -> sends granted now (Ledger.take_budget)
Budget = Callable[[str, int, float, float], int]


@dataclass(frozen=True, slots=True)
class SendResult:
    key: str
    provider_id: str | None = None
    error: DeliveryError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def configured(environ: Mapping[str, str], needed: tuple[str, ...], either: tuple[str, ...] = ()) -> bool:
    """True when every variable is set, False when none is; a partial set is a ConfigError naming the gap."""
    names = needed + either
    present = [n for n in names if environ.get(n)]
    if not present:
        return False
    missing = [n for n in needed if not environ.get(n)]
    if either and not any(environ.get(n) for n in either):
        missing.append(" or ".join(either))
    if missing:
        raise ConfigError(
            f"{', '.join(present)} set but {', '.join(missing)} missing: set all, or none for the dry-run outbox"
        )
    return True


class Channel(abc.ABC):
    name: ClassVar[str]
    consumer: ClassVar[str]
    address: ClassVar[Literal["phone", "email"] | None] = None
    consent: ClassVar[str | None] = None
    consent_default: ClassVar[bool] = False  # when the roster does not say
    parts: ClassVar[tuple[str, ...]]
    subject_part: ClassVar[str | None] = None
    audience: ClassVar[Literal["families", "press"]] = "families"
    quiet_hours: ClassVar[bool] = False
    daily_cap: ClassVar[bool] = False
    options: ClassVar[type[Options]] = Options
    approval: ClassVar[bool] = False  # whether its own options take `approval` (a press draft's sign-off)
    gated: ClassVar[bool] = True  # family messages wait for the campaign's approvers; press drafts do not
    unit: ClassVar[str] = "message"
    #: a short form (an SMS, a call): only the facts an event marks brief must be in it (comms/render/facts.py)
    brief: ClassVar[bool] = False
    #: a message whose news is past (EventData.expires) is `expired`, not sent; False: written, marked late
    expires: ClassVar[bool] = True
    #: read aloud (a call): a link is said as its host and path ("dadeschools.net/teams"), not a URL
    spoken: ClassVar[bool] = False
    #: in incident mode it carries the verification line ("M-DCPS will never ask for your password...")
    verify_line: ClassVar[bool] = False
    #: the environment variables of the provider's credentials, and of its API's address: a synthetic
    #: roster may only be sent through a provider at a local address
    credentials: ClassVar[tuple[str, ...]] = ()
    api_url_var: ClassVar[str | None] = None

    #: provider error codes that mean the recipient opted out: the address joins the suppression list
    opted_out_codes: ClassVar[frozenset[str]] = frozenset()
    #: the provider library's exceptions that mean "try again later"
    transient_errors: tuple[type[BaseException], ...] = ()

    @property
    def spec(self) -> type[Channel]:
        """The class that declares this channel."""
        return type(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], out: Path) -> Channel:
        """The provider configured by `environ`, or the dry-run outbox under `out` when it is not."""
        from comms.channels.outbox import OutboxChannel

        return OutboxChannel(out / "outbox", cls)

    @classmethod
    def normalise(cls, address: str) -> str:
        """The form an address is kept and looked up in on the suppression list."""
        return address.strip()

    @classmethod
    def languages(cls, district: District, options: Options) -> list[str]:
        """The languages this channel renders the campaign's template in."""
        return list(district.press_languages if cls.audience == "press" else district.languages)

    @classmethod
    def held(cls, lang: str, options: Options) -> str | None:
        """Why a family reading `lang` cannot get this channel's message, if so."""
        return None

    @classmethod
    def meta(cls, options: Options) -> dict[str, str]:
        """What the provider needs to know about the campaign's settings, carried on each message."""
        return {"approval": "required"} if options.approval else {}

    @classmethod
    def size(cls, text: str) -> str | None:
        """How big a rendered part is, in the terms its provider bills (`comms preview` shows it)."""
        return None

    @classmethod
    def units(cls, parts: Mapping[str, str]) -> int:
        """How many billed units one rendered message costs (an SMS: its segments)."""
        return 1

    @classmethod
    def refuse(cls, rendered: Rendered, district: District) -> str | None:
        """Why a rendered message may never be sent as it is, if so (e.g. an SMS too long)."""
        return None

    @abc.abstractmethod
    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Deliver a batch; one SendResult per message, in order. Never a bare bool."""

    #: seconds the provider's own record of a send may lag behind it: rows a crash left in `sending`
    #: are reconciled only once they are this old, so an accepted send is never taken for a lost one
    reconcile_after: float = 0.0

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        """Stamp what `reconcile` will need into each message before it is ledgered as `sending`
        (SendGrid: the request it goes out in). Most providers need nothing."""
        return list(messages)

    def reconcile(self, messages: Sequence[Message]) -> list[SendResult | None]:
        """For messages a crash left in `sending`: the earlier send if the provider has it, else None
        (send again). Providers that cannot tell return None for all."""
        return [None] * len(messages)

    def share_budget(self, take: Budget) -> None:  # noqa: B027 - optional hook
        """Keep to the sender's throughput limit together with every other delivery process:
        `take(name, want, rate, burst)` grants sends from a budget they share (a PostgreSQL ledger).
        A channel without a limit has nothing to share."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
