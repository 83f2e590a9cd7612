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
from comms.errors import FactError, RenderError
from comms.events import Event
from comms.pipeline.audience import Target
from comms.render import Rendered, Renderer, facts, template_paths
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
        q = campaign.quote
        quote = {"by": q.by, "said": q.said, "text": q.text[lang], "translated": lang != q.original}
    district = settings.district
    scope = event.data.scope()
    # the schools in the order the event lists them: a press draft names them as the event does
    scope_ids = [r.id for r in event.data.refs() if r.kind == "school"] if scope and scope.schools else None
    return {
        "event": event.data,
        "envelope": {"id": event.id, "source": event.source, "type": event.type},
        "issued": event.time.astimezone(settings.district.tz).date(),
        "district": district,
        # the glossary in this language: templates say {{ g.office }}, never a translation of their own
        "g": {term: texts[lang] for term, texts in district.glossary.items() if lang in texts},
        "incident": settings.incident(campaign),
        "select": campaign.audience.select,  # which of the event's audiences: its facts differ
        "website_down": district.incident.website_down,
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
        "typical": _typical(campaign, roster, recipient),
    }


def _typical(campaign: Campaign, roster: Roster, recipient: Recipient | None) -> dict[str, Any] | None:
    """The district's typical total for the (first) child's grade or school, where it gives one."""
    c = campaign.comparison
    if c is None or recipient is None or not recipient.students:
        return None
    s = recipient.students[0]
    n = c.typical.get(s.grade if c.by == "grade" else s.school_id)
    if n is None:
        return None
    return {"by": c.by, "absences": n, "as_of": c.as_of, "grade": s.grade, "school": roster.schools[s.school_id].name}


class Composer:
    def __init__(self, settings: Settings, roster: Roster, renderer: Renderer) -> None:
        self.settings, self.roster, self.renderer = settings, roster, renderer
        self._mass_texts: OrderedDict[tuple[str, ...], Rendered] = OrderedDict()  # the last events' texts

    def render(
        self,
        spec: type[Channel],
        options: Options,
        cid: str,
        campaign: Campaign,
        event: Event,
        t: Target,
        check: bool = True,
    ) -> Rendered:
        """One text, checked against the event's facts: FactError when it may not go as it is.
        `check=False`: a family's own text after the first of its language passed (the check costs
        twice the render: 1.2 ms an e-mail, six minutes over 300,000 families)."""
        ctx = context(self.settings, self.roster, cid, campaign, event, t.lang, t.recipient)
        r = self.renderer.render(spec.name, options.template, t.lang, ctx)
        if check and (found := self.check(spec, options, t.lang, event, ctx, r)):
            raise FactError(
                f"campaigns.{cid}.channels.{spec.name} ({t.lang}): {found[0]}"
                + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                + ": the event is held, not sent to anyone in any language; fix the template or the event"
            )
        return r

    def check(
        self, spec: type[Channel], options: Options, lang: str, event: Event, ctx: dict[str, Any], r: Rendered
    ) -> list[str]:
        """What one rendering of the event leaves out or adds (comms/render/facts.py)."""
        return facts.problems(
            rendered=r,
            files=template_paths(spec.name, options.template, lang),
            spec=spec,
            lang=lang,
            data=event.data,
            context=ctx,
            district=self.settings.district,
            school_name=self._school_name,
        )

    def _school_name(self, school_id: str) -> str | None:
        school = self.roster.schools.get(school_id)
        return school.name if school else None

    def personal(self, spec: type[Channel], options: Options, targets: Sequence[Target]) -> bool:
        """Whether the template reads anything of one family (then each family's text is its own)."""
        langs = {t.lang for t in targets}
        reads = frozenset().union(*(self.renderer.reads(spec.name, options.template, lang) for lang in langs))
        return bool(PERSONAL & reads)

    def first_of_each_language(
        self,
        spec: type[Channel],
        options: Options,
        cid: str,
        campaign: Campaign,
        event: Event,
        targets: Sequence[Target],
    ) -> None:
        """Render and check one family's text per language before any personal text goes: a template
        that leaves out a fact holds the whole event, never half of its families' messages."""
        for t in {t.lang: t for t in reversed(targets)}.values():
            self.render(spec, options, cid, campaign, event, t)

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
