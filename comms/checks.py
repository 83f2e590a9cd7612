"""`comms validate` and `comms preview`: render without sending."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from comms import translations
from comms.app import Env
from comms.channels import channel_class
from comms.config import Settings, load_settings
from comms.dev.demo import sample_events
from comms.errors import RenderError
from comms.events import Event, parse_event
from comms.ledger import Ledger
from comms.pipeline import Pipeline
from comms.render import Rendered, Renderer, facts, template_paths
from comms.roster import Recipient, Roster


def _pipeline(env: Env, settings: Settings, roster: Roster | None = None) -> Pipeline:
    # Preview never writes the ledger (nor reads it): it renders only
    return Pipeline(settings, roster or Roster.load(env.roster), Renderer(env.templates), _NO_LEDGER, {})


_NO_LEDGER: Ledger = None  # type: ignore[assignment]


def _sample_recipient(p: Pipeline, cid: str, event: Event, lang: str) -> Recipient | None:
    campaign = p.settings.campaigns[cid]
    audience = p.roster.audience(campaign, event)
    match = next((r for r in audience if r.guardian.language == lang), None)
    if match or not audience:
        return match
    first = audience[0]  # nobody in the fixture speaks `lang`: borrow a family, in that language
    return Recipient(first.key, dataclasses.replace(first.guardian, language=lang), first.students)


def render_one(p: Pipeline, cid: str, event: Event, channel: str, lang: str) -> tuple[Rendered, list[str]]:
    """One rendering of the event, and what it leaves out or adds (comms/render/facts.py)."""
    campaign = p.settings.campaigns[cid]
    options = campaign.channels.get(channel)
    if options is None:
        raise RenderError(f"campaign {cid!r} does not send on channel {channel!r}")
    spec = channel_class(channel)
    recipient = None if spec.audience == "press" else _sample_recipient(p, cid, event, lang)
    ctx = p.context(cid, campaign, event, lang, recipient)
    r = p.renderer.render(channel, options.template, lang, ctx)
    return r, p.composer.check(spec, options, lang, event, ctx, r)


def template_links(settings: Settings, templates: Path) -> list[str]:
    """A link written into a template that may not reach a family (a shortener; in incident mode any
    link off the district's domains or not https)."""
    incident = settings.district.incident.active or any(c.incident for c in settings.campaigns.values())
    out = []
    for path in sorted(templates.rglob("*.j2")):
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            for url in facts.URL.findall(line):
                if why := facts.link_problem(url.rstrip(".,;:"), settings.district.links, incident):
                    out.append(f"{path.relative_to(templates).as_posix()}:{n}: {why}")
    return out


def _samples(settings: Settings) -> dict[str, list[Event]]:
    """The demo event of each type, and for a campaign with tiers one threshold event per tier (each
    tier's label and actions make a different text)."""
    samples: dict[str, list[Event]] = {}
    for raw in sample_events():
        e = parse_event(raw)
        samples.setdefault(e.type, []).append(e)
    threshold = samples.get("attendance.absence-threshold", [])
    if threshold:
        doc = json.loads(threshold[0].raw)
        tiers = {t.name: t.min_absences for _, c in settings.campaigns_for(threshold[0].type) for t in c.tiers or ()}
        samples[threshold[0].type] = []
        for name, least in tiers.items():
            doc["data"].update(tier=name, absences=least)
            doc["id"] = f"sample-absence-threshold-{name}"
            samples[threshold[0].type].append(parse_event(json.dumps(doc)))
    return samples


def check_templates(settings: Settings, env: Env) -> list[str]:
    """Every template named for every language exists, and renders the sample events of its type;
    every event type a campaign reacts to has a sample event (comms/dev/demo.py), or nothing of
    that campaign would be checked. A message its channel would refuse (an SMS over
    district.sms_max_segments) is an error: the pipeline would never send it."""
    renderer = Renderer(env.templates)
    problems = []
    for cid, c in settings.campaigns.items():
        for channel, options in c.channels.items():
            for lang in channel_class(channel).languages(settings.district, options):
                for name in template_paths(channel, options.template, lang).values():
                    if not renderer.exists(name):
                        problems.append(
                            f"campaigns.{cid}.channels.{channel}.template: "
                            f"{env.templates / name} does not exist ({lang})"
                        )
    for lang in settings.district.languages:  # the answer to a HELP text (comms serve)
        try:
            renderer.render("sms", "_help", lang, {"district": settings.district})
        except RenderError as exc:
            problems.append(f"the answer to HELP ({lang}): {exc}")
    problems += template_links(settings, env.templates)
    if problems:
        return problems
    samples = _samples(settings)
    for cid, c in settings.campaigns.items():
        if not samples.get(c.event_type):
            problems.append(
                f"campaigns.{cid}.event_type: no sample event of type {c.event_type!r} in comms/dev/demo.py "
                "(sample_events): its templates cannot be checked"
            )
    roster = Roster.load(env.roster)  # once for every mode
    for mode, variant in _modes(settings):
        p = _pipeline(env, variant, roster)
        for cid, c in variant.campaigns.items():
            for event in samples.get(c.event_type, []):
                for channel, options in c.channels.items():
                    spec = channel_class(channel)
                    for lang in spec.languages(variant.district, options):
                        try:
                            r, found = render_one(p, cid, event, channel, lang)
                        except RenderError as exc:
                            problems.append(f"campaigns.{cid}.channels.{channel} ({lang}){mode}: {exc}")
                            continue
                        problems += [
                            f"campaigns.{cid}.channels.{channel}: {x}{mode} with the demo event {event.id}"
                            for x in found
                        ]
                        if why := spec.refuse(r, variant.district):
                            problems.append(
                                f"campaigns.{cid}.channels.{channel} ({lang}): {why}{mode} with the demo event "
                                f"{event.id}: it would never be sent"
                            )
    return problems


def _modes(settings: Settings) -> list[tuple[str, Settings]]:
    """The settings as they are, and in incident mode (with the website up, then down) when the config
    can turn it on: the week it is needed is no time to find a Spanish SMS too long for its line."""
    out = [("", settings)]
    d = settings.district
    if d.links is None or "verify" not in d.glossary:
        return out
    for down in (False, True):
        if d.incident.active and d.incident.website_down == down:
            continue
        incident = d.incident.model_copy(update={"active": True, "website_down": down})
        variant = settings.model_copy(update={"district": d.model_copy(update={"incident": incident})})
        out.append((f" (incident mode{', website down' if down else ''})", variant))
    return out


def preview_event(env: Env, event: Event, channel: str, lang: str) -> list[tuple[str, str]]:
    settings = load_settings(env.config)
    p = _pipeline(env, settings)
    p.check(event)
    out = []
    for cid, c in settings.campaigns_for(event.type):
        if c.channels.get(channel) is None:
            continue
        r, found = render_one(p, cid, event, channel, lang)
        for x in found:
            out.append((f"{cid} {channel} {lang}: would be held", x))
        if r.subject:
            out.append((f"{cid} {channel} {lang} subject", r.subject))
        for part, text in r.parts.items():
            size = channel_class(channel).size(text)
            out.append((f"{cid} {channel} {lang} {part}{f' ({size})' if size else ''}", text))
    if not out:
        raise RenderError(f"no campaign sends {event.type!r} on channel {channel!r}")
    return out


def warnings(settings: Settings, templates: Path | None = None) -> list[str]:
    """What is allowed but probably not meant: a mass send that nobody approves, a translation whose
    English changed since it was reviewed."""
    out = []
    if templates is not None:
        stale: dict[str, list[str]] = {}
        for t in translations.all_states(templates):
            if t.state is translations.Review.STALE:
                stale.setdefault(t.source, []).append(t.lang)
        for source, langs in sorted(stale.items()):
            out.append(
                f"templates/{source} changed: {', '.join(sorted(set(langs)))} need review "
                "(comms translations; a campaign needing approval cannot be approved until then)"
            )
    for cid, c in settings.campaigns.items():
        gated = [name for name, _ in c.channels.items() if channel_class(name).gated]
        if c.audience.select == "scope" and c.approval == "none" and gated:
            out.append(
                f"campaigns.{cid}: every event sends to every family in its scope at once ({', '.join(gated)}); "
                "`approval: one` (or `two`) holds it for the office to check in the console first"
            )
    return out
