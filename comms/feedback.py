"""The feedback consumer: what the providers report back, applied to the ledger and the suppression
list. `comms serve` verifies each webhook and writes it to the feedback topic; this consumer (group
comms-feedback) applies a whole batch in one ledger transaction, so a district fan-out's million
callbacks keep up.

Every report is idempotent: a callback delivered twice, or out of order, changes nothing the second
time (ledger.advance moves a row forward only; the suppression list ignores a repeat).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from comms.events import EmailEvent, Event, ProviderStatus, ReplyReceived
from comms.ledger import Ledger, Mark, State
from comms.pipeline.policies import UNSUBSCRIBED
from comms.replies import keyword

#: Twilio's message and call statuses that say how it ended; the others (queued, sent, ringing...)
#: say nothing the ledger does not know
TWILIO_STATUS = {
    "delivered": State.DELIVERED,
    "read": State.DELIVERED,
    "undelivered": State.UNDELIVERED,
    "failed": State.UNDELIVERED,
    "completed": State.DELIVERED,  # a call answered and played to its end
    "busy": State.UNDELIVERED,
    "no-answer": State.UNDELIVERED,
    "canceled": State.UNDELIVERED,
}
#: SendGrid events that end a message (which put its address on the list: _email_suppression)
EMAIL_STATE = {
    "delivered": State.DELIVERED,
    "bounce": State.BOUNCED,
    "dropped": State.DROPPED,
    "spamreport": State.SPAM_REPORT,
}


def _email_suppression(e: EmailEvent) -> str | None:
    """The suppression-list reason an e-mail event gives its address, if any."""
    return {
        "bounce": f"bounced: {e.reason or ''}".strip(": "),
        "dropped": f"dropped: {e.reason or ''}".strip(": "),
        "spamreport": "spam_report",
        "unsubscribe": UNSUBSCRIBED,
        "group_unsubscribe": f"{UNSUBSCRIBED}: group {e.asm_group_id}",
    }.get(e.event)


class Feedback:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def handle(self, event: Event) -> Counter[str]:
        return self.handle_many([event])

    def handle_many(self, events: Sequence[Event]) -> Counter[str]:
        """Apply a batch of reports: one ledger write per kind, whatever the batch's size."""
        out: Counter[str] = Counter()
        marks: list[Mark] = []
        # (channel, address) -> the last word on it in this batch: a STOP then a START from one
        # number leave it off the list, a START then a STOP on it (one number keeps one partition,
        # so its reports come in the order they were sent)
        intent: dict[tuple[str, str], tuple[str, str, str]] = {}
        replies: list[tuple[str, str, str, str]] = []
        for event in events:
            d = event.data
            out["reports"] += 1
            if isinstance(d, ProviderStatus):
                state = TWILIO_STATUS.get(d.status)
                if state is not None:
                    marks.append(Mark(d.ledger_key, state, d.provider_id, d.error_code))
            elif isinstance(d, ReplyReceived):
                kw = keyword(d.body, d.opt_out_type)
                if kw == "stop":
                    intent[(d.channel, d.from_number)] = ("suppress", "opted_out: replied STOP", "reply")
                elif kw == "start":
                    intent[(d.channel, d.from_number)] = ("lift", "opted_out", "")
                elif kw is None:
                    replies.append((d.provider_id, d.channel, d.from_number, d.body))
                out[f"reply_{kw or 'words'}"] += 1
            elif isinstance(d, EmailEvent):
                if (state := EMAIL_STATE.get(d.event)) is not None and d.ledger_key:
                    marks.append(Mark(d.ledger_key, state, None, d.reason))
                if (reason := _email_suppression(d)) is not None:
                    intent[("email", d.email)] = ("suppress", reason, f"sendgrid {d.event}")
                if d.event == "group_resubscribe":
                    intent[("email", d.email)] = ("lift", f"{UNSUBSCRIBED}: group {d.asm_group_id}", "")
        out["moved"] += self.ledger.advance(marks)
        out["suppressed_new"] += self.ledger.suppress(
            [(c, a, reason, source) for (c, a), (what, reason, source) in intent.items() if what == "suppress"]
        )
        out["lifted"] += self.ledger.unsuppress(
            [(c, a, prefix) for (c, a), (what, prefix, _) in intent.items() if what == "lift"]
        )
        self.ledger.keep_replies(replies)
        return out
