"""From one valid event to ledgered messages on one channel, in stages (one module each):

    audience.py   who, in which language, at which address; who is held back and why (consent...)
    policies.py   pure rules: the suppression list, the hold-out arm, news past, quiet hours (defer),
                  the daily cap (defer to the next day's window, expire after `hold_days`)
    compose.py    the template context and the texts (once per language for a mass message)
    deliver.py    reconcile a crash's `sending` rows, the provider's answers as state changes

    audience -> superseded -> hold-out -> suppression -> news past -> render -> [approval]
             -> reconcile -> quiet hours -> daily cap -> `sending` -> provider -> sent / failed / retry

superseded: a tier notice whose student crossed a higher tier in the same batch is not sent, and the
higher one's event supersedes the student's earlier notices still held (Ledger.supersede).

[approval]: a campaign with `approval: one|two` holds its family messages as `awaiting_approval`,
rendered, until its approvers decide (comms/approvals.py); the release loop then sends the approved
ones through the rest of the stages, quiet hours and cap included, and cancels the rejected ones.

The Pipeline below only runs the stages in order and writes what they decide to the ledger. The
audience goes through in chunks (5,000 families): chunks bound the memory a district-wide fan-out
needs, and let the first families' messages go out while the last ones are still being ledgered.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from comms.channels import Channel, Message, Options
from comms.clock import Clock, system_clock
from comms.config import Campaign, Settings
from comms.errors import ConfigError, EventValidationError, TransientDeliveryError
from comms.events import CampaignMismatch, Event, conflicting_duplicate
from comms.ledger import FINAL, Entry, Ledger, Mark, Row, State, delivery_key, message_payload
from comms.pipeline import deliver, policies, shards
from comms.pipeline.audience import Target, targets
from comms.pipeline.compose import Composer, context
from comms.pipeline.shards import Shard
from comms.progress import NO_PROGRESS, Tracker
from comms.render import Rendered, Renderer
from comms.roster import Recipient, Roster

log = logging.getLogger("comms.pipeline")
PARTIAL_RETRY = 0.1  # seconds: some messages went through, the provider is only shedding load


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        roster: Roster,
        renderer: Renderer,
        ledger: Ledger,
        channels: Mapping[str, Channel],
        clock: Clock = system_clock,
        chunk: int = 5000,
    ) -> None:
        self.settings, self.roster, self.renderer, self.ledger = settings, roster, renderer, ledger
        self.channels = dict(channels)
        self.clock = clock
        self.chunk = chunk  # recipients ledgered, rendered and sent at a time
        self.composer = Composer(settings, roster, renderer)
        self.progress: Tracker = NO_PROGRESS  # families handled per channel (`comms run` shows it)
        self._audience_cache: OrderedDict[tuple[str, ...], list[Target]] = OrderedDict()

    def context(
        self, cid: str, campaign: Campaign, event: Event, lang: str, recipient: Recipient | None
    ) -> dict[str, Any]:
        return context(self.settings, self.roster, cid, campaign, event, lang, recipient)

    # -- checks ---------------------------------------------------------------------------------------
    def check(self, event: Event) -> None:
        """Contract checks that need the roster and campaigns.yaml; raise EventValidationError."""
        self.roster.check_event(event)
        for cid, c in self.settings.campaigns_for(event.type):
            try:
                event.data.check_campaign(cid, c)
            except CampaignMismatch as exc:
                raise EventValidationError(str(exc), exc.field) from None

    def refuse_conflict(self, event: Event) -> None:
        """The same id with another body is a correction sent under the old id: the ledger would take it
        for a retry and drop it without a word, so it is refused with the reason instead."""
        if self.ledger.remember_event(event.uid, event.digest) != event.digest:
            raise conflicting_duplicate(event)

    # -- the work -------------------------------------------------------------------------------------
    def handle(self, event: Event, channel: str) -> Counter[str]:
        """Deliver one event on one channel for every campaign it triggers. Returns counts by outcome.

        Raises TransientDeliveryError after recording what did go out, so the caller retries the event
        and the ledger skips the messages already sent.
        """
        outcome: Counter[str] = Counter()
        plans = []
        for cid, campaign, options, who in self._audiences(event, channel):
            texts = self._texts(channel, options, cid, campaign, event, who, outcome)
            plans.append((cid, campaign, options, who, texts))
        for _, _, _, who, _ in plans:
            self.progress.task(channel, len(who))
        return self._fan_out(event, channel, plans, outcome)

    def plan(self, event: Event, channel: str, size: int) -> tuple[list[Shard], Counter[str]]:
        """The shards of the event's fan-out on `channel` (shards.py), each campaign's texts rendered
        once first: a template that may not be sent dead-letters the event before any shard is out."""
        outcome: Counter[str] = Counter()
        out: list[Shard] = []
        for cid, campaign, options, who in self._audiences(event, channel):
            self._texts(channel, options, cid, campaign, event, who, outcome)
            out += shards.split(channel, cid, len(who), size)
        outcome["shards"] += len(out)
        return out, outcome

    def handle_shard(self, event: Event, shard: Shard) -> Counter[str]:
        """Deliver one shard of an event's fan-out: the same stages as handle(), for its slice."""
        if shard.channel not in self.channels:
            raise EventValidationError(f"shard of unknown channel {shard.channel!r}")
        outcome: Counter[str] = Counter()
        for cid, campaign, options, who in self._audiences(event, shard.channel):
            if cid != shard.campaign:
                continue
            if len(who) != shard.audience:
                raise ConfigError(
                    f"{event.uid} {cid}: the planner's roster has {shard.audience} families in the audience, "
                    f"this host's {len(who)}: every delivery host must hold the same roster (COMMS_ROSTER)"
                )
            part = who[shard.start : shard.stop]
            texts = self._texts(shard.channel, options, cid, campaign, event, part, outcome)
            self.progress.task(shard.channel, len(part))
            return self._fan_out(event, shard.channel, [(cid, campaign, options, part, texts)], outcome)
        raise EventValidationError(f"event {event.uid} does not trigger campaign {shard.campaign!r} on {shard.channel}")

    def _audiences(self, event: Event, channel: str) -> list[tuple[str, Campaign, Options, list[Target]]]:
        """Each campaign the event triggers on the channel, with its audience."""
        self.check(event)
        spec = self.channels[channel].spec
        campaigns = [
            (cid, c, o) for cid, c in self.settings.campaigns_for(event.type) if (o := c.channels.get(channel))
        ]
        if campaigns:
            self.refuse_conflict(event)
        out = []
        for cid, c, o in campaigns:
            # the shards of one event come one after another: the audience is worked out once for
            # them all, not once per shard (67 shards of a district-wide event: 67 passes otherwise)
            key = (event.uid, event.digest, channel, cid)
            who = self._audience_cache.get(key)
            if who is None:
                who = targets(spec, o, cid, c, event, self.roster, self.settings.district)
                self._audience_cache[key] = who
                while len(self._audience_cache) > 4:  # a process delivers two or three channels
                    self._audience_cache.popitem(last=False)
            out.append((cid, c, o, who))
        return out

    def _texts(
        self,
        channel: str,
        options: Options,
        cid: str,
        campaign: Campaign,
        event: Event,
        who: Sequence[Target],
        outcome: Counter[str],
    ) -> dict[str, Rendered]:
        spec = self.channels[channel].spec
        if self.composer.personal(spec, options, who):
            self.composer.first_of_each_language(spec, options, cid, campaign, event, who)
            return {}
        return self.composer.each_language(spec, options, cid, campaign, event, who, outcome)

    def _fan_out(
        self,
        event: Event,
        channel: str,
        plans: Sequence[tuple[str, Campaign, Options, Sequence[Target], Mapping[str, Rendered]]],
        outcome: Counter[str],
    ) -> Counter[str]:
        provider = self.channels[channel]
        transient: TransientDeliveryError | None = None
        for cid, campaign, options, who, texts in plans:
            if earlier := event.data.supersedes():
                # still held (the night, the cap, approvers): this event says more, and goes instead
                why = f"superseded: {event.uid} says more"
                uids = [f"{event.source}#{i}" for i in earlier]
                outcome["superseded"] += self.ledger.supersede(cid, channel, uids, why)
            for i in range(0, len(who), self.chunk):
                part = who[i : i + self.chunk]
                counts, error = self._chunk(provider, event, cid, campaign, options, part, texts)
                self.progress.advance(channel, len(part))
                outcome.update(counts)
                if error is not None:
                    transient = transient or error
                    if not counts["sent"]:
                        raise error  # nothing got through: the provider is down, stop plowing through chunks
        if transient is not None:
            raise transient
        return outcome

    def _chunk(
        self,
        provider: Channel,
        event: Event,
        cid: str,
        campaign: Campaign,
        options: Options,
        chunk: Sequence[Target],
        texts: Mapping[str, Rendered],
    ) -> tuple[Counter[str], TransientDeliveryError | None]:
        """Ledger, hold back, render and deliver one chunk of the audience."""
        spec = provider.spec
        keyed = {delivery_key(event.uid, cid, spec.name, t.key): t for t in chunk}
        rows = self.ledger.open(
            Entry(k, event.uid, event.type, cid, spec.name, t.key, t.lang, _guardian(t), t.to) for k, t in keyed.items()
        )
        # deferred and awaiting rows belong to the release loop; final rows are done
        todo = {k: t for k, t in keyed.items() if rows[k].state not in FINAL and rows[k].state not in _RELEASED}
        out = Counter(already_done=len(keyed) - len(todo))
        if todo and (why := event.data.superseded()):  # a higher tier crossed at the same time goes instead
            self.ledger.mark(Mark(k, State.SUPERSEDED, None, why) for k in todo)
            out["superseded"] += len(todo)
            return out, None
        if held_out := self._held_out(cid, campaign, event, todo):
            self.ledger.mark(held_out)
            out["held_out"] += len(held_out)
            return out, None
        addresses = [t.to for t in todo.values() if t.to and not t.held] if spec.address else []
        listed = self.ledger.suppressed(spec.name, addresses) if addresses else {}
        held = policies.suppressed(todo, listed, campaign.priority == "emergency")
        self.ledger.mark(held)
        out["suppressed"] += len(held)
        done = {m.key for m in held}
        until = event.data.expires()
        late = policies.past(until, self.clock().astimezone(self.settings.district.tz).date())
        meta = spec.meta(options)
        if late and spec.expires:
            expired = [Mark(k, State.EXPIRED, None, late) for k in todo if k not in done]
            self.ledger.mark(expired)
            out["expired"] += len(expired)
            return out, None
        if late:  # a press draft is still written: the record of what happened, marked late
            meta = {**meta, "late": late}
        messages, refused = [], []
        for k, t in todo.items():
            if k in done:
                continue
            r = texts.get(t.lang)
            if r is None:  # personal: each family's own text
                # checked on the first family of each language before the fan-out (_texts)
                r = self.composer.render(spec, options, cid, campaign, event, t, check=False)
                out["rendered"] += 1
                if why := spec.refuse(r, self.settings.district):
                    refused.append(Mark(k, State.FAILED, None, why))
                    continue
            messages.append(
                Message(
                    key=k,
                    channel=spec.name,
                    campaign=cid,
                    event_uid=event.uid,
                    lang=t.lang,
                    to=t.to or "",
                    body=r.parts,
                    subject=r.subject,
                    priority=campaign.priority,
                    meta=meta,
                    guardian=_guardian(t),
                    expires=until.isoformat() if until else None,
                )
            )
        if refused:
            self.ledger.mark(refused)
            out["failed"] += len(refused)
            log.warning("%s %s: %d message(s) may not be sent: %s", spec.name, cid, len(refused), refused[0].detail)
        if spec.gated and campaign.approval != "none":
            verdict = self.ledger.verdict(event.uid, cid)
            if verdict is None:  # rendered and kept: the console shows them to the approvers
                self.ledger.hold((m.key, message_payload(m), f"approval: {campaign.approval}") for m in messages)
                out["awaiting_approval"] += len(messages)
                return out, None
            if verdict == "rejected":
                self.ledger.mark(Mark(m.key, State.CANCELLED, None, "rejected") for m in messages)
                out["cancelled"] += len(messages)
                return out, None
        counts, error = self.deliver(provider, messages, rows)
        out.update(counts)
        return out, error

    def _held_out(self, cid: str, campaign: Campaign, event: Event, todo: Mapping[str, Target]) -> list[Mark]:
        """Every message of the event, held out when its student is in the campaign's control group."""
        scope = event.data.scope()
        student = scope.student if scope else None
        if campaign.holdout is None or student is None or not todo:
            return []
        if event.data.tier_name() in campaign.holdout_exclude_tiers:
            return []  # always sent: the district does not withhold this tier's outreach
        drawn = policies.arm(campaign.holdout_seed or cid, student, campaign.holdout)
        day = self.clock().astimezone(self.settings.district.tz).date().isoformat()
        if self.ledger.assign(cid, student, drawn, event.data.tier_name(), day) != "control":
            return []
        why = f"held_out: control group of the campaign's hold-out ({campaign.holdout:.0%})"
        return [Mark(k, State.HELD_OUT, None, why) for k in todo]

    def release_decided(self, channel: str, limit: int | None = None) -> Counter[str]:
        """Send the messages of the campaigns whose approvers said yes (through quiet hours and the
        cap, as any fresh message), and cancel those they rejected."""
        out: Counter[str] = Counter()
        for uid, cid, verdict in self.ledger.decided(channel):
            rows = self.ledger.awaiting(channel, uid, cid, limit or self.chunk)  # a chunk, as a fresh fan-out
            if verdict == "approved":
                out.update(self._release(channel, rows))
            else:
                self.ledger.mark(Mark(r.key, State.CANCELLED, None, "rejected") for r in rows)
                out["cancelled"] += len(rows)
        return out

    def release_due(self, channel: str, limit: int = 500) -> Counter[str]:
        """Send the approved messages, then the deferred ones whose quiet hours are over."""
        out = self.release_decided(channel)
        spec = self.channels[channel].spec
        if spec.quiet_hours or spec.daily_cap:  # what waited for the morning or for the next day's cap
            out.update(self._release(channel, self.ledger.due(channel, self.clock().timestamp(), limit)))
        return out

    def _release(self, channel: str, rows: Sequence[Row]) -> Counter[str]:
        """Send ledgered messages (deferred or approved) unless their address opted out meanwhile."""
        if not rows:
            return Counter()
        listed = self.ledger.suppressed(channel, [r.destination for r in rows if r.destination])
        emergency = {r.key: (r.payload or {}).get("priority") == "emergency" for r in rows}
        late_optout = [
            m for r in rows if (m := policies.opted_out(r.key, r.destination, listed, emergency[r.key])) is not None
        ]
        self.ledger.mark(late_optout)
        stopped = {m.key for m in late_optout}
        # held for the night, for approvers or by the cap past the news's last day, or held by the cap
        # longer than it may wait: expired, never sent late
        today = self.clock().astimezone(self.settings.district.tz).date()
        cap = self.settings.district.daily_cap
        expired = [
            Mark(r.key, State.EXPIRED, None, why)
            for r in rows
            if r.key not in stopped and self.channels[channel].spec.expires
            and (
                why := policies.past((r.payload or {}).get("expires"), today)
                or policies.waited_too_long((r.payload or {}).get("capped"), today, cap)
            )
        ]  # fmt: skip
        self.ledger.mark(expired)
        stopped |= {m.key for m in expired}
        messages = [Message(**r.payload) for r in rows if r.payload and r.key not in stopped]
        out, error = self.deliver(self.channels[channel], messages, {r.key: r for r in rows})
        out["released"] += len(messages)
        out["suppressed"] += len(late_optout)
        out["expired"] += len(expired)
        if error is not None:
            raise error
        return out

    def deliver(
        self, provider: Channel, messages: Sequence[Message], rows: Mapping[str, Row]
    ) -> tuple[Counter[str], TransientDeliveryError | None]:
        """Reconcile, apply the policies, send and ledger `messages`: counts by outcome, and the
        transient error to retry on, if any (the counts hold what did happen either way)."""
        out: Counter[str] = Counter()
        if not messages:
            return out, None
        spec = provider.spec
        messages = deliver.as_ledgered(messages, rows)
        crashed = [m for m in messages if rows[m.key].state is State.SENDING]
        young, wait = deliver.settling(crashed, rows, self.clock().timestamp(), provider.reconcile_after)
        settle = None
        if young:
            settle = TransientDeliveryError(
                f"{len(young)} message(s) interrupted by a crash: the provider's records settle in {wait:.0f}s",
                retry_after=wait,
            )
            later = {m.key for m in young}
            crashed = [m for m in crashed if m.key not in later]
            messages = [m for m in messages if m.key not in later]
            out["settling"] += len(young)
        if crashed:
            found = deliver.reconciled(crashed, provider.reconcile(crashed))
            self.ledger.mark(found)
            out["reconciled"] += len(found)
            recovered = {m.key for m in found}
            messages = [m for m in messages if m.key not in recovered]
        now = self.clock().astimezone(self.settings.district.tz)
        if spec.quiet_hours:
            # released messages are due: the quiet hours they waited for are over
            waiting = [m for m in messages if rows[m.key].state is not State.DEFERRED]
            go, later_msgs, until = policies.quiet_hours(waiting, now, self.settings.district.quiet_hours)
            if until is not None:
                self.ledger.defer(
                    (m.key, message_payload(m), until.timestamp(), f"quiet hours until {until:%H:%M}")
                    for m in later_msgs
                )
                out["deferred"] += len(later_msgs)
                held = {m.key for m in later_msgs}
                messages = [m for m in messages if m.key not in held]
        day = now.date().isoformat()
        if spec.daily_cap:
            guardians = sorted({m.guardian for m in messages if m.guardian})
            sent_today = self.ledger.sent_today(spec.name, guardians, day)
            cap = self.settings.district.daily_cap
            messages, capped = policies.daily_cap(messages, sent_today, cap)
            waits, expired = policies.hold_capped(capped, now, self.settings.district.quiet_hours, cap)
            self.ledger.defer((m.key, message_payload(m), at.timestamp(), why) for m, at, why in waits)
            self.ledger.mark(expired)
            out["capped"] += len(waits)
            out["expired"] += len(expired)
        error = self._send(provider, messages, rows, day, out) if messages else None
        return out, error or settle

    def _send(
        self, provider: Channel, messages: list[Message], rows: Mapping[str, Row], day: str, out: Counter[str]
    ) -> TransientDeliveryError | None:
        """Record the attempt, then send; the answers become state changes."""
        messages = provider.prepare(messages)
        # a claim on each row as read: another delivery process that took a row since is left to send it
        theirs = self.ledger.mark_sending(
            ((m.key, message_payload(m), day) for m in messages), {m.key: rows[m.key].attempts for m in messages}
        )
        if theirs:
            messages = [m for m in messages if m.key not in theirs]
            out["claimed_elsewhere"] += len(theirs)
        o = deliver.outcomes(provider.spec, messages, provider.send(messages), rows)
        self.ledger.mark(o.marks)
        self.ledger.suppress(o.optouts)
        out.update({k: n for k, n in (("sent", o.sent), ("failed", o.failed), ("retry", o.retry)) if n})
        if o.transient is not None and o.sent and o.transient.retry_after is None:
            # Some went through: the provider is up and only shedding load, so come back soon.
            # (When nothing gets through, the worker backs off exponentially instead.)
            return TransientDeliveryError(str(o.transient), o.transient.code, retry_after=PARTIAL_RETRY)
        return o.transient


_RELEASED = frozenset({State.DEFERRED, State.AWAITING_APPROVAL})


def _guardian(t: Target) -> str | None:
    """Whose daily cap a message counts against."""
    return t.recipient.guardian.id if t.recipient else None


__all__ = ["Pipeline", "Target"]
