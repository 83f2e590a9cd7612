"""The send plan of an event, before anything goes: per campaign, channel and language, the messages
planned, those held back and why, what one message costs in the provider's units (SMS segments,
GSM-7 or UCS-2), the price and the time to reach every family, and each rendering.

It is read from the ledger, where an event that needs approval is already planned to the last
family (`awaiting_approval`, rendered); quiet hours and the daily cap apply when the messages go, so
the plan says what they would hold if they went now.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from comms.approvals import Approvals, Status
from comms.channels import channel_class
from comms.config import Settings
from comms.ledger import FINAL, WENT_OUT, Ledger, State
from comms.pipeline.policies import quiet_until

#: states whose messages are planned (going, gone, or waiting for approval or the morning)
PLANNED = frozenset(State) - {State.NEW, State.SUPPRESSED, State.CANCELLED, State.FAILED, State.EXPIRED}


@dataclass(slots=True, kw_only=True)
class Line:
    """One channel and language of a campaign."""

    channel: str
    lang: str
    planned: int = 0
    held: Counter[str] = field(default_factory=Counter)  # reason -> messages
    parts: dict[str, str] = field(default_factory=dict)  # one rendering (the mass text, or an example)
    subject: str | None = None
    unit: str = "message"
    units_each: int = 0
    size: str | None = None  # the provider's terms: "140 characters, 1 segment(s), GSM-7, ..."
    cost: float | None = None
    seconds: float | None = None

    @property
    def units(self) -> int:
        return self.planned * self.units_each


@dataclass(slots=True, kw_only=True)
class CampaignPlan:
    campaign: str
    title: str
    priority: str
    approval: Status
    lines: list[Line]
    personal: bool  # each family's own text (attendance): the rendering shown is one example
    quiet: dict[str, str]  # channel -> what quiet hours would do now
    capped: dict[str, int]  # channel -> messages the daily cap would hold now

    @property
    def cost(self) -> float | None:
        costs = [ln.cost for ln in self.lines if ln.cost is not None]
        return sum(costs) if costs else None

    @property
    def seconds(self) -> float | None:
        """Each channel's consumer sends at once, so the slowest channel sets the time."""
        per_channel: Counter[str] = Counter()
        for ln in self.lines:
            if ln.seconds is not None:
                per_channel[ln.channel] += ln.seconds  # type: ignore[assignment]
        return max(per_channel.values()) if per_channel else None


def plan(ledger: Ledger, settings: Settings, event_uid: str, now: dt.datetime) -> list[CampaignPlan]:
    approvals = Approvals(ledger, settings)
    campaigns = sorted({c for _, c, *_ in ledger.tallies([event_uid])})
    out = []
    local = now.astimezone(settings.district.tz)
    for cid in campaigns:
        camp = settings.campaigns.get(cid)
        lines: dict[tuple[str, str], Line] = {}
        for channel, lang, state, detail, n, payload in ledger.event_groups(cid, event_uid):
            spec = channel_class(channel)
            ln = lines.setdefault((channel, lang), Line(channel=channel, lang=lang, unit=spec.unit))
            if state in PLANNED:
                ln.planned += n
            else:
                ln.held[f"{state}: {detail}" if detail else state] += n
            if payload and payload.get("body") and not ln.parts:
                ln.parts, ln.subject = dict(payload["body"]), payload.get("subject")
                ln.units_each = spec.units(ln.parts)
                main = spec.parts[0]
                ln.size = spec.size(ln.parts.get(main, "")) if main in ln.parts else None
        sending = settings.district.sending
        for ln in lines.values():
            rate = sending.get(ln.channel)
            if rate is not None and ln.units_each:
                ln.cost = ln.units * rate.price
                ln.seconds = ln.units / rate.per_second
        priority = camp.priority if camp else "normal"
        quiet = {}
        until = quiet_until(local, settings.district.quiet_hours)
        for channel in sorted({ln.channel for ln in lines.values()}):
            if channel_class(channel).quiet_hours and priority != "emergency" and until is not None:
                quiet[channel] = f"inside quiet hours now: would wait until {until:%H:%M} ({until:%A})"
        awaiting = any(r[1] == cid and r[4] == State.AWAITING_APPROVAL for r in ledger.tallies([event_uid]))
        capped = _capped(ledger, settings, cid, event_uid, priority, local.date()) if awaiting else {}
        out.append(
            CampaignPlan(
                campaign=cid,
                title=camp.title if camp else cid,
                priority=priority,
                approval=approvals.status(event_uid, cid),
                lines=sorted(lines.values(), key=lambda ln: (ln.channel, ln.lang)),
                personal=bool(camp and camp.audience.select == "student"),
                quiet=quiet,
                capped={c: n for c, n in capped.items() if n},
            )
        )
    return out


def _capped(
    ledger: Ledger, settings: Settings, cid: str, event_uid: str, priority: str, day: dt.date
) -> dict[str, int]:
    """Per channel with a cap: the messages awaiting approval whose guardian has had the day's cap of
    messages on the channel already."""
    waiting: dict[str, Counter[str]] = {}
    for ch, g, _, state, _ in ledger.event_rows(cid, event_uid):
        if g and state == State.AWAITING_APPROVAL and channel_class(ch).daily_cap:
            waiting.setdefault(ch, Counter())[g] += 1
    cap = settings.district.daily_cap
    limit = cap.emergency if priority == "emergency" else cap.normal
    out = {}
    for ch, guardians in waiting.items():
        sent = ledger.sent_today(ch, sorted(guardians), day.isoformat())
        out[ch] = sum(n for g, n in guardians.items() if sent.get(g, 0) >= limit)
    return out


def summary(rows: list[tuple[str, str, str, str, str, int]]) -> dict[str, Any]:
    """Totals of tallies rows: messages, done (final), went out, awaiting."""
    total = sum(r[5] for r in rows)
    final = sum(r[5] for r in rows if State(r[4]) in FINAL)
    return {
        "total": total,
        "done": final,
        "out": sum(r[5] for r in rows if State(r[4]) in WENT_OUT),
        "awaiting": sum(r[5] for r in rows if r[4] == State.AWAITING_APPROVAL),
        "held": sum(r[5] for r in rows if r[4] == State.SUPPRESSED),
        "cancelled": sum(r[5] for r in rows if r[4] == State.CANCELLED),
    }
