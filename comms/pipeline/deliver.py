"""Stage 4, deliver: reconcile what a crash interrupted, call the provider, and turn its answers into
state changes. As in GOV.UK Notify, the provider call (`Channel.send`), the state changes (`outcomes`,
written by the ledger) and the retry shell (comms/worker.py: a transient error re-reads the event
after a pause) are apart; these functions decide, the Pipeline applies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from comms.channels import Channel, Message, SendResult
from comms.errors import PermanentDeliveryError, TransientDeliveryError
from comms.ledger import Mark, Row, State
from comms.privacy import mask

log = logging.getLogger("comms.pipeline")


def as_ledgered(messages: Sequence[Message], rows: Mapping[str, Row]) -> list[Message]:
    """A crash left these in `sending`: what was ledgered before the crash is what may have gone out,
    so that is what is reconciled and resent (for SendGrid it holds the request id)."""
    return [
        Message(**payload) if rows[m.key].state is State.SENDING and (payload := rows[m.key].payload) else m
        for m in messages
    ]


def settling(
    crashed: Sequence[Message], rows: Mapping[str, Row], now: float, reconcile_after: float
) -> tuple[list[Message], float]:
    """The crash's messages too recent for the provider's record to tell "sent" from "lost", and how
    long until the oldest of them can."""
    age = {m.key: now - rows[m.key].updated for m in crashed}
    young = [m for m in crashed if age[m.key] < reconcile_after]
    return young, (reconcile_after - min(age[m.key] for m in young)) if young else 0.0


def reconciled(crashed: Sequence[Message], found: Sequence[SendResult | None]) -> list[Mark]:
    """The crash's messages the provider has: sent, with the provider's id."""
    return [
        Mark(m.key, State.SENT, f.provider_id, "reconciled")
        for m, f in zip(crashed, found, strict=True)
        if f is not None
    ]


@dataclass(slots=True)
class Outcomes:
    marks: list[Mark] = field(default_factory=list)
    optouts: list[tuple[str, str, str, str]] = field(default_factory=list)  # (channel, address, reason, source)
    transient: TransientDeliveryError | None = None
    sent: int = 0
    failed: int = 0
    retry: int = 0


def outcomes(
    spec: type[Channel], messages: Sequence[Message], results: Sequence[SendResult], rows: Mapping[str, Row]
) -> Outcomes:
    """The provider's answers as state changes: sent; failed for good (and, for an opt-out code, the
    address on the suppression list); or back where it came from to be retried (nothing went out)."""
    o = Outcomes()
    for m, res in zip(messages, results, strict=True):
        if res.error is None:
            o.marks.append(Mark(res.key, State.SENT, res.provider_id))
            o.sent += 1
        elif isinstance(res.error, PermanentDeliveryError):
            o.marks.append(Mark(res.key, State.FAILED, None, f"{res.error.code or ''} {res.error}".strip()))
            o.failed += 1
            if res.error.code in spec.opted_out_codes:
                o.optouts.append((spec.name, m.to, "opted_out", f"provider {res.error.code}"))
            log.warning("%s %s to %s failed for good: %s", spec.name, m.campaign, mask(m.to), res.error)
        else:
            # released messages go back to waiting for release, the others to pending
            back = State.DEFERRED if rows[m.key].state is State.DEFERRED else State.PENDING
            o.marks.append(Mark(res.key, back, None, str(res.error)))
            if o.transient is None:
                err = res.error
                o.transient = err if isinstance(err, TransientDeliveryError) else TransientDeliveryError(str(err))
            o.retry += 1
    return o
