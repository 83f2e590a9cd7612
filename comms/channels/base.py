"""The channel interface every provider implements: send a batch, get one result per message."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from comms.errors import DeliveryError


def retry_after(headers: Any) -> float | None:
    """Seconds from a provider answer's Retry-After header (any mapping with .get), if it has one."""
    try:
        value = headers.get("Retry-After") if headers else None
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Message:
    key: str  # ledger key: also the provider-side idempotency reference
    channel: str  # press_release | sms | email
    campaign: str
    event_uid: str
    lang: str
    to: str  # E.164 number, e-mail address, or a press-draft name
    body: dict[str, str]  # rendered parts: txt / html / md
    subject: str | None = None
    priority: str = "normal"
    meta: dict[str, str] = field(default_factory=dict)
    guardian: str | None = None  # whose daily cap this counts against


@dataclass(frozen=True, slots=True)
class SendResult:
    key: str
    provider_id: str | None = None
    error: DeliveryError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Channel(abc.ABC):
    #: the provider library's exceptions that mean "try again later"
    transient_errors: tuple[type[BaseException], ...] = ()

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

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
