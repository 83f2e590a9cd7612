"""`comms validate` and `comms preview`: render without sending."""

from __future__ import annotations

import dataclasses
import json

from comms.app import Env
from comms.channels import channel_class
from comms.config import Settings, load_settings
from comms.dev.demo import sample_events
from comms.errors import RenderError
from comms.events import Event, parse_event
from comms.ledger import Ledger
from comms.pipeline import Pipeline
from comms.render import Rendered, Renderer, template_paths
from comms.roster import Recipient, Roster


def _pipeline(env: Env, settings: Settings) -> Pipeline:
    # Preview never writes the ledger (nor reads it): it renders only
    return Pipeline(settings, Roster.load(env.roster), Renderer(env.templates), _NO_LEDGER, {})


_NO_LEDGER: Ledger = None  # type: ignore[assignment]


def _sample_recipient(p: Pipeline, cid: str, event: Event, lang: str) -> Recipient | None:
    campaign = p.settings.campaigns[cid]
    audience = p.roster.audience(campaign, event)
    match = next((r for r in audience if r.guardian.language == lang), None)
    if match or not audience:
        return match
    first = audience[0]  # nobody in the fixture speaks `lang`: borrow a family, in that language
    return Recipient(first.key, dataclasses.replace(first.guardian, language=lang), first.students)


def render_one(p: Pipeline, cid: str, event: Event, channel: str, lang: str) -> Rendered:
    campaign = p.settings.campaigns[cid]
    options = campaign.channels.get(channel)
    if options is None:
        raise RenderError(f"campaign {cid!r} does not send on channel {channel!r}")
    spec = channel_class(channel)
    recipient = None if spec.audience == "press" else _sample_recipient(p, cid, event, lang)
    return p.renderer.render(channel, options.template, lang, p.context(cid, campaign, event, lang, recipient))


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
    if problems:
        return problems
    p = _pipeline(env, settings)
    samples = _samples(settings)
    for cid, c in settings.campaigns.items():
        if not samples.get(c.event_type):
            problems.append(
                f"campaigns.{cid}.event_type: no sample event of type {c.event_type!r} in comms/dev/demo.py "
                "(sample_events): its templates cannot be checked"
            )
        for event in samples.get(c.event_type, []):
            for channel, options in c.channels.items():
                spec = channel_class(channel)
                for lang in spec.languages(settings.district, options):
                    try:
                        r = render_one(p, cid, event, channel, lang)
                    except RenderError as exc:
                        problems.append(f"campaigns.{cid}.channels.{channel} ({lang}): {exc}")
                        continue
                    if why := spec.refuse(r, settings.district):
                        problems.append(
                            f"campaigns.{cid}.channels.{channel} ({lang}): {why} with the demo event {event.id}: "
                            "it would never be sent"
                        )
    return problems


def preview_event(env: Env, event: Event, channel: str, lang: str) -> list[tuple[str, str]]:
    settings = load_settings(env.config)
    p = _pipeline(env, settings)
    p.check(event)
    out = []
    for cid, c in settings.campaigns_for(event.type):
        if c.channels.get(channel) is None:
            continue
        r = render_one(p, cid, event, channel, lang)
        if r.subject:
            out.append((f"{cid} {channel} {lang} subject", r.subject))
        for part, text in r.parts.items():
            size = channel_class(channel).size(text)
            out.append((f"{cid} {channel} {lang} {part}{f' ({size})' if size else ''}", text))
    if not out:
        raise RenderError(f"no campaign sends {event.type!r} on channel {channel!r}")
    return out


def warnings(settings: Settings) -> list[str]:
    """What is allowed but probably not meant: a mass send that nobody approves."""
    out = []
    for cid, c in settings.campaigns.items():
        gated = [name for name, _ in c.channels.items() if channel_class(name).gated]
        if c.audience.select == "scope" and c.approval == "none" and gated:
            out.append(
                f"campaigns.{cid}: every event sends to every family in its scope at once ({', '.join(gated)}); "
                "`approval: one` (or `two`) holds it for the office to check in the console first"
            )
    return out
