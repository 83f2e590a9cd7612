"""`comms validate` and `comms preview`: render without sending."""

from __future__ import annotations

import json

from comms.app import Env
from comms.channels.segments import sms_size
from comms.config import Settings, load_settings
from comms.demo import sample_events
from comms.errors import RenderError
from comms.events import Event, parse_event
from comms.pipeline import Pipeline
from comms.render import Renderer, template_paths
from comms.roster import Guardian, Recipient, Roster


class _NoLedger:
    """Preview never writes the ledger."""


def _pipeline(env: Env, settings: Settings) -> Pipeline:
    return Pipeline(settings, Roster.load(env.roster), Renderer(env.templates), _NoLedger(), {})  # type: ignore[arg-type]


def _sample_recipient(p: Pipeline, cid: str, event: Event, lang: str) -> Recipient | None:
    campaign = p.settings.campaigns[cid]
    audience = p.roster.audience(campaign, event)
    match = next((r for r in audience if r.guardian.language == lang), None)
    if match or not audience:
        return match
    first = audience[0]  # nobody in the fixture speaks `lang`: borrow a family, in that language
    g = first.guardian
    return Recipient(first.key, Guardian(g.id, g.first_name, lang, g.phone, g.email, True, True), first.students)


def render_one(p: Pipeline, cid: str, event: Event, channel: str, lang: str):  # noqa: ANN201
    campaign = p.settings.campaigns[cid]
    chcfg = getattr(campaign.channels, channel)
    recipient = None if channel == "press_release" else _sample_recipient(p, cid, event, lang)
    return p.renderer.render(channel, chcfg.template, lang, p.context(cid, campaign, event, lang, recipient))


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
    """Every template named for every language exists, and renders the demo events of its type.

    An SMS over district.sms_max_segments is an error: the pipeline would never send it."""
    renderer = Renderer(env.templates)
    problems = []
    for cid, c in settings.campaigns.items():
        for channel, chcfg in c.channels.items():
            langs = settings.district.press_languages if channel == "press_release" else settings.district.languages
            for lang in langs:
                for name in template_paths(channel, chcfg.template, lang).values():
                    if not renderer.exists(name):
                        problems.append(
                            f"campaigns.{cid}.channels.{channel}.template: "
                            f"{env.templates / name} does not exist ({lang})"
                        )
    if problems:
        return problems
    p = _pipeline(env, settings)
    samples = _samples(settings)
    for cid, c in settings.campaigns.items():
        for event in samples.get(c.event_type, []):
            for channel, _ in c.channels.items():
                langs = settings.district.press_languages if channel == "press_release" else settings.district.languages
                for lang in langs:
                    try:
                        r = render_one(p, cid, event, channel, lang)
                    except RenderError as exc:
                        problems.append(f"campaigns.{cid}.channels.{channel} ({lang}): {exc}")
                        continue
                    size = sms_size(r.parts["txt"].strip()) if channel == "sms" else None
                    if size and size.segments > settings.district.sms_max_segments:
                        problems.append(
                            f"campaigns.{cid}.channels.sms ({lang}): {size} with the demo event {event.id}, more "
                            f"than district.sms_max_segments ({settings.district.sms_max_segments}): it would "
                            "never be sent"
                        )
    return problems


def preview_event(env: Env, event: Event, channel: str, lang: str) -> list[tuple[str, str]]:
    settings = load_settings(env.config)
    p = _pipeline(env, settings)
    p.check(event)
    out = []
    for cid, c in settings.campaigns_for(event.type):
        if getattr(c.channels, channel, None) is None:
            continue
        r = render_one(p, cid, event, channel, lang)
        if r.subject:
            out.append((f"{cid} {channel} {lang} subject", r.subject))
        for part, text in r.parts.items():
            extra = f" ({len(text.strip())} characters, {sms_size(text.strip())})" if channel == "sms" else ""
            out.append((f"{cid} {channel} {lang} {part}{extra}", text))
    if not out:
        raise RenderError(f"no campaign sends {event.type!r} on channel {channel!r}")
    return out
