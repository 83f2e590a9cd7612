"""Stage 1, audience and consent: who is to get one campaign's message on one channel, in which
language and at which address, and who is held back before anything is rendered (and why)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from comms.channels import Channel, Options
from comms.config import Campaign, District
from comms.events import Event
from comms.ledger import delivery_key
from comms.roster import Recipient, Roster


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One message to be: a family (SMS, e-mail, voice) or a language (a press draft)."""

    key: str  # the recipient part of the ledger key
    lang: str
    to: str | None  # the address; for a press draft its file name
    recipient: Recipient | None
    held: str | None = None  # why it must not be sent, if so


def family_language(district: District, wanted: str) -> str:
    return wanted if wanted in district.languages else district.default_language


def draft_name(event: Event, cid: str, district: District, lang: str) -> str:
    """A press draft's file stem: one per event and campaign, the language as suffix (…-ab12cd34.es)."""
    issued: dt.date = event.time.astimezone(district.tz).date()
    return f"{issued.isoformat()}-{cid}-{delivery_key(event.uid, cid, '', '')[:8]}.{lang}"


def targets(
    spec: type[Channel],
    options: Options,
    cid: str,
    campaign: Campaign,
    event: Event,
    roster: Roster,
    district: District,
) -> list[Target]:
    if spec.audience == "press":
        return [
            Target(key=f"press:{lang}", lang=lang, to=draft_name(event, cid, district, lang), recipient=None)
            for lang in spec.languages(district, options)
        ]
    out = []
    for r in roster.audience(campaign, event):
        g = r.guardian
        lang = family_language(district, g.language)
        to = g.address(spec.address)
        held = (
            "no_contact"
            if g.no_contact
            else "no_consent"
            if spec.consent and spec.consent not in g.consents
            else "no_address"
            if not to
            else spec.held(lang, options)
        )
        out.append(Target(key=r.key, lang=lang, to=to, recipient=r, held=held))
    return out
