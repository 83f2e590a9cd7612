"""Stage 3, render: the template context of one event, and its messages' texts.

A template that reads nothing personal is rendered once per language: a district-wide announcement
is one text per language, not 300,000, and all of them are rendered before anything goes out, so a
text that cannot go holds the event in every language.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from comms.channels import Channel, Options
from comms.config import Campaign, Settings
from comms.errors import RenderError
from comms.events import Event
from comms.pipeline.audience import Target
from comms.render import Rendered, Renderer
from comms.roster import Recipient, Roster

PERSONAL = frozenset({"guardian", "students", "*"})  # context a per-family template reads


def context(
    settings: Settings,
    roster: Roster,
    cid: str,
    campaign: Campaign,
    event: Event,
    lang: str,
    recipient: Recipient | None,
) -> dict[str, Any]:
    quote = None
    if campaign.quote and lang in campaign.quote.text:
        quote = {"by": campaign.quote.by, "text": campaign.quote.text[lang]}
    scope = event.data.scope()
    # the schools in the order the event lists them: a press draft names them as the event does
    scope_ids = [r.id for r in event.data.refs() if r.kind == "school"] if scope and scope.schools else None
    return {
        "event": event.data,
        "envelope": {"id": event.id, "source": event.source, "type": event.type},
        "issued": event.time.astimezone(settings.district.tz).date(),
        "district": settings.district,
        "campaign": {
            "id": cid,
            "title": campaign.title,
            "hashtag": campaign.hashtag,
            "priority": campaign.priority,
            "quote": quote,
        },
        "tier": None,
        **event.data.campaign_context(campaign, lang),
        "scope_schools": [roster.schools[s].name for s in scope_ids] if scope_ids else None,  # None: district-wide
        "guardian": {"first_name": recipient.guardian.first_name} if recipient else None,
        "students": [
            {"first_name": s.first_name, "grade": s.grade, "school": roster.schools[s.school_id].name}
            for s in recipient.students
        ]
        if recipient
        else [],
    }


class Composer:
    def __init__(self, settings: Settings, roster: Roster, renderer: Renderer) -> None:
        self.settings, self.roster, self.renderer = settings, roster, renderer
        self._mass_texts: OrderedDict[tuple[str, ...], Rendered] = OrderedDict()  # the last events' texts

    def render(
        self, spec: type[Channel], options: Options, cid: str, campaign: Campaign, event: Event, t: Target
    ) -> Rendered:
        ctx = context(self.settings, self.roster, cid, campaign, event, t.lang, t.recipient)
        return self.renderer.render(spec.name, options.template, t.lang, ctx)

    def personal(self, spec: type[Channel], options: Options, targets: Sequence[Target]) -> bool:
        """Whether the template reads anything of one family (then each family's text is its own)."""
        langs = {t.lang for t in targets}
        reads = frozenset().union(*(self.renderer.reads(spec.name, options.template, lang) for lang in langs))
        return bool(PERSONAL & reads)

    def each_language(
        self,
        spec: type[Channel],
        options: Options,
        cid: str,
        campaign: Campaign,
        event: Event,
        targets: Sequence[Target],
        outcome: Counter[str],
    ) -> dict[str, Rendered]:
        """The one text per language of a mass message; RenderError if any may never be sent."""
        first = {t.lang: t for t in reversed(targets)}
        rendered = {}
        for lang, t in sorted(first.items()):
            # a retried event (same id, same body) renders to the same text: from the cache, so a
            # flood of retries costs no rendering, as when only the ledger's rows turned them away
            key = (event.uid, event.digest, cid, spec.name, lang)
            r = self._mass_texts.get(key)
            if r is None:
                r = self.render(spec, options, cid, campaign, event, t)
                outcome["rendered"] += 1
                self._mass_texts[key] = r
                while len(self._mass_texts) > 64:
                    self._mass_texts.popitem(last=False)
            if refused := spec.refuse(r, self.settings.district):
                raise RenderError(
                    f"campaigns.{cid}.channels.{spec.name} ({lang}): {refused}: the event is held, not sent to anyone "
                    "in any language; shorten the template or the event's text"
                )
            rendered[lang] = r
        return rendered
