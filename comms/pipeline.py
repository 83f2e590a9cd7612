"""From one valid event to ledgered messages on one channel.

audience -> consent -> suppression list -> render -> (reconcile a crash's `sending` rows)
         -> quiet hours (defer) -> daily cap -> `sending` -> provider -> sent / failed / retry

The audience goes through in chunks (5,000 families), and a template that reads nothing personal
is rendered once per language: a district-wide announcement is one text per language, not 300,000.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from comms.channels import Channel, Message
from comms.channels.segments import sms_size
from comms.clock import Clock, system_clock
from comms.config import Campaign, Settings
from comms.errors import EventValidationError, PermanentDeliveryError, RenderError, TransientDeliveryError
from comms.events import AbsenceThreshold, Event, conflicting_duplicate
from comms.ledger import FINAL, Entry, Ledger, Row, delivery_key, message_payload
from comms.privacy import mask
from comms.render import Rendered, Renderer
from comms.roster import Recipient, Roster

log = logging.getLogger("comms.pipeline")
OPTED_OUT_CODES = {"21610"}  # Twilio: the recipient replied STOP
PERSONAL = frozenset({"guardian", "students", "*"})  # context a per-family template reads
PARTIAL_RETRY = 0.1  # seconds: some messages went through, the provider is only shedding load


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
        self,
        settings: Settings,
        roster: Roster,
        renderer: Renderer,
        ledger: Ledger,
        channels: dict[str, Channel],
        clock: Clock = system_clock,
        chunk: int = 5000,
    ) -> None:
        self.settings, self.roster, self.renderer, self.ledger = settings, roster, renderer, ledger
        self.channels = channels
        self.clock = clock
        self.chunk = chunk  # recipients ledgered, rendered and sent at a time
        self._mass_texts: OrderedDict[tuple[str, ...], Rendered] = OrderedDict()  # the last events' texts

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
            assert t is not None  # checked in check()
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

    # -- checks ---------------------------------------------------------------------------------------
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

    def refuse_conflict(self, event: Event) -> None:
        """The same id with another body is a correction sent under the old id: the ledger would take it
        for a retry and drop it without a word, so it is refused with the reason instead."""
        if self.ledger.remember_event(event.uid, event.digest) != event.digest:
            raise conflicting_duplicate(event)

    # -- time -----------------------------------------------------------------------------------------
    def _local_now(self) -> dt.datetime:
        return self.clock().astimezone(self.settings.district.tz)

    def quiet_until(self, now: dt.datetime) -> dt.datetime | None:
        """When quiet hours end, if `now` (district time) is inside them."""
        q = self.settings.district.quiet_hours
        t = now.time()
        inside = (t >= q.start or t < q.end) if q.start > q.end else (q.start <= t < q.end)
        if not inside:
            return None
        day = now.date() if t < q.end else now.date() + dt.timedelta(days=1)
        return dt.datetime.combine(day, q.end, tzinfo=now.tzinfo)

    # -- the work -------------------------------------------------------------------------------------
    def handle(self, event: Event, channel: str) -> Counter[str]:
        """Deliver one event on one channel for every campaign it triggers. Returns counts by outcome.

        Raises TransientDeliveryError after recording what did go out, so the caller retries the event
        and the ledger skips the messages already sent.
        """
        self.check(event)
        outcome: Counter[str] = Counter()
        transient: TransientDeliveryError | None = None
        campaigns = [(cid, c) for cid, c in self.settings.campaigns_for(event.type) if getattr(c.channels, channel)]
        if campaigns:
            self.refuse_conflict(event)
        plans = []
        for cid, campaign in campaigns:
            chcfg = getattr(campaign.channels, channel)
            targets = self._targets(channel, campaign, event)
            # Mass messages that read nothing personal are rendered once per language, all of them
            # before anything goes out: a text that cannot go must hold the event in every language.
            personal = bool(PERSONAL & self._template_reads(channel, chcfg.template, targets))
            rendered = {} if personal else self._render_each_language(event, channel, cid, campaign, targets, outcome)
            plans.append((cid, campaign, targets, personal, rendered))
        for cid, campaign, targets, personal, rendered in plans:
            # Chunks bound the memory a district-wide fan-out needs, and let the first families'
            # messages go out while the last ones are still being ledgered.
            for i in range(0, len(targets), self.chunk):
                sent_before = outcome["sent"]
                try:
                    self._handle_chunk(
                        event, channel, cid, campaign, targets[i : i + self.chunk], personal, rendered, outcome
                    )
                except TransientDeliveryError as exc:
                    transient = transient or exc
                    if outcome["sent"] == sent_before:
                        raise  # nothing got through: the provider is down, stop plowing through chunks
        if transient is not None:
            raise transient
        return outcome

    def _render_each_language(
        self, event: Event, channel: str, cid: str, campaign: Campaign, targets: list[Target], outcome: Counter[str]
    ) -> dict[str, Rendered]:
        """The one text per language of a mass message; RenderError if any is too long to send."""
        chcfg = getattr(campaign.channels, channel)
        first = {t.lang: t for t in reversed(targets)}
        rendered = {}
        for lang, t in sorted(first.items()):
            # a retried event (same id, same body) renders to the same text: from the cache, so a
            # flood of retries costs no rendering, as when only the ledger's rows turned them away
            key = (event.uid, event.digest, cid, channel, lang)
            r = self._mass_texts.get(key)
            if r is None:
                r = self.renderer.render(
                    channel, chcfg.template, lang, self.context(cid, campaign, event, lang, t.recipient)
                )
                outcome["rendered"] += 1
                self._mass_texts[key] = r
                while len(self._mass_texts) > 64:
                    self._mass_texts.popitem(last=False)
            if too_long := self._too_long(channel, r):
                raise RenderError(
                    f"campaigns.{cid}.channels.{channel} ({lang}): {too_long}: the event is held, not sent to anyone "
                    "in any language; shorten the template or the event's text"
                )
            rendered[lang] = r
        return rendered

    def _too_long(self, channel: str, r: Rendered) -> str | None:
        """Why a rendered message may not go out because of its length, if so.

        The rule: an SMS over district.sms_max_segments is never sent. A mass text over it holds the
        whole event (RenderError, dead-lettered with this reason); a personal one fails for that family
        with the reason in the ledger (`comms report` shows it)."""
        if channel != "sms":
            return None
        size = sms_size(r.parts["txt"].strip())
        limit = self.settings.district.sms_max_segments
        return f"sms_too_long: {size}, more than district.sms_max_segments ({limit})" if size.segments > limit else None

    def _template_reads(self, channel: str, template: str, targets: list[Target]) -> frozenset[str]:
        langs = {t.lang for t in targets}
        return frozenset().union(*(self.renderer.reads(channel, template, lang) for lang in langs))

    def _handle_chunk(
        self,
        event: Event,
        channel: str,
        cid: str,
        campaign: Campaign,
        targets: list[Target],
        personal: bool,
        rendered: dict[str, Rendered],
        outcome: Counter[str],
    ) -> None:
        chcfg = getattr(campaign.channels, channel)
        issued = event.time.astimezone(self.settings.district.tz).date()
        keyed = {delivery_key(event.uid, cid, channel, t.key): t for t in targets}
        rows = self.ledger.open(
            Entry(
                k,
                event.uid,
                event.type,
                cid,
                channel,
                t.key,
                t.lang,
                t.recipient.guardian.id if t.recipient else None,
                t.to,
            )
            for k, t in keyed.items()
        )
        # deferred rows belong to the release loop; final rows are done
        todo = {k: t for k, t in keyed.items() if rows[k].state not in FINAL and rows[k].state != "deferred"}
        outcome["already_done"] += len(keyed) - len(todo)
        listed = (
            self.ledger.suppressed(channel, [t.to for t in todo.values() if t.to and not t.suppressed])
            if channel != "press_release"
            else {}
        )
        suppressed = [
            (k, "suppressed", None, t.suppressed or f"opted_out: {listed[t.to]}")
            for k, t in todo.items()
            if t.suppressed or (t.to and t.to in listed)
        ]
        self.ledger.mark(suppressed)
        outcome["suppressed"] += len(suppressed)
        done = {k for k, *_ in suppressed}
        meta = {"approval": "required"} if chcfg.approval else {}
        if chcfg.unsubscribe_group:
            meta["unsubscribe_group"] = str(chcfg.unsubscribe_group)
        messages = []
        too_long_marks: list[tuple[str, str, str | None, str | None]] = []
        for k, t in todo.items():
            if k in done:
                continue
            r = rendered.get(t.lang) if not personal else None
            if r is None:
                r = self.renderer.render(
                    channel, chcfg.template, t.lang, self.context(cid, campaign, event, t.lang, t.recipient)
                )
                outcome["rendered"] += 1
                if not personal:
                    rendered[t.lang] = r
                elif too_long := self._too_long(channel, r):
                    too_long_marks.append((k, "failed", None, too_long))
                    continue
            # Press drafts: one name per event and campaign, the language as suffix (…-ab12cd34.es.md)
            to = t.to or f"{issued.isoformat()}-{cid}-{delivery_key(event.uid, cid, '', '')[:8]}.{t.lang}"
            messages.append(
                Message(
                    k,
                    channel,
                    cid,
                    event.uid,
                    t.lang,
                    to,
                    r.parts,
                    r.subject,
                    campaign.priority,
                    meta,
                    t.recipient.guardian.id if t.recipient else None,
                )
            )
        if too_long_marks:
            self.ledger.mark(too_long_marks)
            outcome["failed"] += len(too_long_marks)
            log.warning(
                "%s %s: %d message(s) too long to send: %s", channel, cid, len(too_long_marks), too_long_marks[0][3]
            )
        self.deliver(channel, messages, rows, out=outcome)

    def release_due(self, channel: str, limit: int = 500) -> Counter[str]:
        """Send the deferred messages whose quiet hours are over."""
        due = self.ledger.due(channel, self.clock().timestamp(), limit)
        if not due:
            return Counter()
        listed = self.ledger.suppressed(channel, [r.destination for r in due if r.destination])
        late_optout = [
            (r.key, "suppressed", None, f"opted_out: {listed[r.destination]}") for r in due if r.destination in listed
        ]
        self.ledger.mark(late_optout)
        messages = [Message(**r.payload) for r in due if r.payload and r.destination not in listed]
        out = self.deliver(channel, messages, {r.key: r for r in due}, releasing=True)
        out["released"] += len(messages)
        out["suppressed"] += len(late_optout)
        return out

    def deliver(
        self,
        channel: str,
        messages: Sequence[Message],
        rows: dict[str, Row],
        releasing: bool = False,
        out: Counter[str] | None = None,
    ) -> Counter[str]:
        """Send and ledger `messages`; counts by outcome go into `out`, which keeps them when a
        TransientDeliveryError is raised for the ones still to retry."""
        out = Counter() if out is None else out
        if not messages:
            return out
        provider = self.channels[channel]
        # 1. A crash left these in `sending`: ask the provider before sending again.
        # What was ledgered before the crash is what may have gone out: reconcile and resend that
        # (for SendGrid it holds the request id).
        messages = [
            Message(**payload) if rows[m.key].state == "sending" and (payload := rows[m.key].payload) else m
            for m in messages
        ]
        crashed = [m for m in messages if rows[m.key].state == "sending"]
        # The provider's record may lag its sends: wait until it can tell "sent" from "lost".
        now_ts = self.clock().timestamp()
        age = {m.key: now_ts - rows[m.key].updated for m in crashed}
        settling = [m for m in crashed if age[m.key] < provider.reconcile_after]
        settle: TransientDeliveryError | None = None
        if settling:
            wait = provider.reconcile_after - min(age[m.key] for m in settling)
            settle = TransientDeliveryError(
                f"{len(settling)} message(s) interrupted by a crash: the provider's records settle in {wait:.0f}s",
                retry_after=wait,
            )
            later = {m.key for m in settling}
            crashed = [m for m in crashed if m.key not in later]
            messages = [m for m in messages if m.key not in later]
            out["settling"] += len(settling)
        if crashed:
            found = provider.reconcile(crashed)
            recovered = {m.key: f for m, f in zip(crashed, found, strict=True) if f is not None}
            self.ledger.mark([(k, "sent", f.provider_id, "reconciled") for k, f in recovered.items()])
            out["reconciled"] += len(recovered)
            messages = [m for m in messages if m.key not in recovered]
        now = self._local_now()
        # 2. Quiet hours: non-emergency SMS waits for the morning.
        if channel == "sms" and not releasing:
            until = self.quiet_until(now)
            if until is not None:
                later = [m for m in messages if m.priority != "emergency"]
                self.ledger.defer(
                    (m.key, message_payload(m), until.timestamp(), f"quiet hours until {until:%H:%M}") for m in later
                )
                out["deferred"] += len(later)
                messages = [m for m in messages if m.priority == "emergency"]
        # 3. The daily cap per guardian.
        day = now.date().isoformat()
        if channel != "press_release":
            cap = self.settings.district.daily_cap
            guardians = sorted({m.guardian for m in messages if m.guardian})
            counts = Counter(self.ledger.sent_today(channel, guardians, day))
            allowed, capped = [], []
            for m in messages:
                limit = cap.emergency if m.priority == "emergency" else cap.normal
                if m.guardian and counts[m.guardian] >= limit:
                    capped.append((m.key, "suppressed", None, f"daily_cap: {limit} per day"))
                else:
                    counts[m.guardian or ""] += 1
                    allowed.append(m)
            self.ledger.mark(capped)
            out["capped"] += len(capped)
            messages = allowed
        if messages:
            self._send(channel, provider, messages, day, releasing, out)
        if settle is not None:
            raise settle
        return out

    def _send(
        self, channel: str, provider: Channel, messages: list[Message], day: str, releasing: bool, out: Counter[str]
    ) -> None:
        # 4. Record the attempt, then send.
        messages = provider.prepare(messages)
        self.ledger.mark_sending((m.key, message_payload(m), day) for m in messages)
        results = provider.send(messages)
        sent = sum(1 for r in results if r.ok)
        marks, optouts = [], []
        transient: TransientDeliveryError | None = None
        for m, res in zip(messages, results, strict=True):
            if res.ok:
                marks.append((res.key, "sent", res.provider_id, None))
                out["sent"] += 1
            elif isinstance(res.error, PermanentDeliveryError):
                marks.append((res.key, "failed", None, f"{res.error.code or ''} {res.error}".strip()))
                out["failed"] += 1
                if res.error.code in OPTED_OUT_CODES:
                    optouts.append((channel, m.to, "opted_out", f"provider {res.error.code}"))
                log.warning("%s %s to %s failed for good: %s", channel, m.campaign, mask(m.to), res.error)
            else:
                # back to pending: nothing went out, the retry sends it (no reconciliation needed)
                marks.append((res.key, "deferred" if releasing else "pending", None, str(res.error)))
                transient = transient or res.error  # type: ignore[assignment]
                out["retry"] += 1
        self.ledger.mark(marks)
        self.ledger.suppress(optouts)
        if transient is not None:
            if sent and transient.retry_after is None:
                # Some went through: the provider is up and only shedding load, so come back soon.
                # (When nothing gets through, the worker backs off exponentially instead.)
                raise TransientDeliveryError(str(transient), transient.code, retry_after=PARTIAL_RETRY)
            raise transient
