"""`comms validate` and `comms preview`: render without sending."""

from __future__ import annotations

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


def check_templates(settings: Settings, env: Env, warnings: list[str] | None = None) -> list[str]:
    """Every template named for every language exists, and renders the demo event of its type.

    SMS longer than district.sms_max_segments are reported in `warnings` (a cost, not an error).
    """
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
    samples = {}
    for raw in sample_events():
        e = parse_event(raw)
        samples.setdefault(e.type, e)
    for cid, c in settings.campaigns.items():
        event = samples.get(c.event_type)
        if event is None:
            continue
        for channel, _ in c.channels.items():
            langs = settings.district.press_languages if channel == "press_release" else settings.district.languages
            for lang in langs:
                try:
                    r = render_one(p, cid, event, channel, lang)
                except RenderError as exc:
                    problems.append(f"campaigns.{cid}.channels.{channel} ({lang}): {exc}")
                    continue
                size = sms_size(r.parts["txt"].strip()) if channel == "sms" else None
                if size and size.segments > settings.district.sms_max_segments and warnings is not None:
                    warnings.append(
                        f"campaigns.{cid}.channels.sms ({lang}): {size} with the demo event, more than "
                        f"district.sms_max_segments ({settings.district.sms_max_segments})"
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
