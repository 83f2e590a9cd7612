"""From one valid event to ledgered messages on one channel: audience, consent, render, send, record."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from comms.channels import Channel, Message
from comms.config import Campaign, Settings
from comms.errors import EventValidationError, PermanentDeliveryError, TransientDeliveryError
from comms.events import AbsenceThreshold, Event
from comms.ledger import FINAL, Entry, Ledger, delivery_key
from comms.privacy import mask
from comms.render import Renderer
from comms.roster import Recipient, Roster

log = logging.getLogger("comms.pipeline")


@dataclass(frozen=True, slots=True)
class Target:
    """One message to be: a family (SMS/e-mail) or a language (press draft)."""

    key: str
    lang: str
    to: str | None
    recipient: Recipient | None
    suppressed: str | None  # why it must not be sent, if so


def _lang(settings: Settings, wanted: str) -> str:
    return wanted if wanted in settings.district.languages else settings.district.default_language


class Pipeline:
    def __init__(
        self, settings: Settings, roster: Roster, renderer: Renderer, ledger: Ledger, channels: dict[str, Channel]
    ) -> None:
        self.settings, self.roster, self.renderer, self.ledger = settings, roster, renderer, ledger
        self.channels = channels

    # -- audience -------------------------------------------------------------------------------------
    def _targets(self, channel: str, campaign: Campaign, event: Event) -> list[Target]:
        if channel == "press_release":
            return [Target(f"press:{lang}", lang, None, None, None) for lang in self.settings.district.press_languages]
        out = []
        for r in self.roster.audience(campaign, event):
            g = r.guardian
            to = g.phone if channel == "sms" else g.email
            consent = g.sms_consent if channel == "sms" else g.email_consent
            why = "no_contact" if g.no_contact else "no_consent" if not consent else "no_address" if not to else None
            out.append(Target(r.key, _lang(self.settings, g.language), to, r, why))
        return out

    # -- rendering ------------------------------------------------------------------------------------
    def context(
        self, cid: str, campaign: Campaign, event: Event, lang: str, recipient: Recipient | None
    ) -> dict[str, Any]:
        tier = None
        if isinstance(event.data, AbsenceThreshold) and campaign.tiers:
            t = campaign.tier(event.data.tier)
            assert t is not None  # checked in handle()
            tier = {"name": t.name, "min_absences": t.min_absences, "label": t.label[lang], "actions": t.actions[lang]}
        quote = None
        if campaign.quote and lang in campaign.quote.text:
            quote = {"by": campaign.quote.by, "text": campaign.quote.text[lang]}
        issued = event.time.astimezone(self.settings.district.tz).date()
        d = event.data
        scope_ids = getattr(d, "schools", None) or (d.sites if getattr(d, "sites", "all") != "all" else None)
        scope_schools = [self.roster.schools[s].name for s in scope_ids] if scope_ids else None
        return {
            "event": event.data,
            "envelope": {"id": event.id, "source": event.source, "type": event.type},
            "issued": issued,
            "district": self.settings.district,
            "campaign": {
                "id": cid,
                "title": campaign.title,
                "hashtag": campaign.hashtag,
                "priority": campaign.priority,
                "quote": quote,
            },
            "tier": tier,
            "scope_schools": scope_schools,  # None: district-wide
            "guardian": {"first_name": recipient.guardian.first_name} if recipient else None,
            "students": [
                {"first_name": s.first_name, "grade": s.grade, "school": self.roster.schools[s.school_id].name}
                for s in recipient.students
            ]
            if recipient
            else [],
        }

    # -- the work -------------------------------------------------------------------------------------
    def check(self, event: Event) -> None:
        """Contract checks that need the roster and campaigns.yaml; raise EventValidationError."""
        self.roster.check_event(event)
        if isinstance(event.data, AbsenceThreshold):
            for cid, c in self.settings.campaigns_for(event.type):
                t = c.tier(event.data.tier)
                if t is None:
                    names = ", ".join(x.name for x in c.tiers or ())
                    raise EventValidationError(
                        f"data.tier: unknown tier {event.data.tier!r} (campaigns.{cid}.tiers has: {names})", "data.tier"
                    )
                if event.data.absences < t.min_absences:
                    raise EventValidationError(
                        f"data.absences: {event.data.absences} is below tier {t.name!r} "
                        f"(min_absences {t.min_absences})",
                        "data.absences",
                    )

    def handle(self, event: Event, channel: str) -> Counter[str]:
        """Deliver one event on one channel for every campaign it triggers. Returns counts by outcome.

        Raises TransientDeliveryError after recording what did go out, so the caller retries the event
        and the ledger skips the messages already sent.
        """
        self.check(event)
        outcome: Counter[str] = Counter()
        transient: TransientDeliveryError | None = None
        for cid, campaign in self.settings.campaigns_for(event.type):
            chcfg = getattr(campaign.channels, channel)
            if chcfg is None:
                continue
            targets = self._targets(channel, campaign, event)
            issued = event.time.astimezone(self.settings.district.tz).date()
            keyed = {delivery_key(event.uid, cid, channel, t.key): t for t in targets}
            states = self.ledger.open(
                Entry(k, event.uid, event.type, cid, channel, t.key, t.lang) for k, t in keyed.items()
            )
            todo = {k: t for k, t in keyed.items() if states.get(k) not in FINAL}
            outcome["already_done"] += len(keyed) - len(todo)
            suppressed = [(k, "suppressed", None, t.suppressed) for k, t in todo.items() if t.suppressed]
            self.ledger.mark(suppressed)
            outcome["suppressed"] += len(suppressed)
            messages = []
            for k, t in todo.items():
                if t.suppressed:
                    continue
                r = self.renderer.render(
                    channel, chcfg.template, t.lang, self.context(cid, campaign, event, t.lang, t.recipient)
                )
                # Press drafts: one name per event and campaign, the language as suffix (…-ab12cd34.es.md)
                to = t.to or f"{issued.isoformat()}-{cid}-{delivery_key(event.uid, cid, '', '')[:8]}.{t.lang}"
                meta = {"approval": "required"} if chcfg.approval else {}
                messages.append(
                    Message(k, channel, cid, event.uid, t.lang, to, r.parts, r.subject, campaign.priority, meta)
                )
            if not messages:
                continue
            results = self.channels[channel].send(messages)
            marks = []
            for m, res in zip(messages, results, strict=True):
                if res.ok:
                    marks.append((res.key, "sent", res.provider_id, None))
                    outcome["sent"] += 1
                elif isinstance(res.error, PermanentDeliveryError):
                    marks.append((res.key, "failed", None, f"{res.error.code or ''} {res.error}".strip()))
                    outcome["failed"] += 1
                    log.warning("%s %s to %s failed for good: %s", channel, cid, mask(m.to), res.error)
                else:
                    transient = transient or res.error  # type: ignore[assignment]
                    outcome["retry"] += 1
            self.ledger.mark(marks)
        if transient is not None:
            raise transient
        return outcome
