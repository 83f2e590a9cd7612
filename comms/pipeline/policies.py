"""Stage 2, the policies: pure functions of messages, what the ledger holds and a time, that say what
may go now and what is held. No server, no clock read: unit-tested with plain values."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

from comms.channels import Message
from comms.config import DailyCap, QuietHours
from comms.ledger import Mark, State
from comms.pipeline.audience import Target

#: the reason a family's own unsubscribe from bulk e-mail leaves on the suppression list (the one-click
#: link, SendGrid's unsubscribe and group unsubscribe); an office's list (`comms suppress import`)
#: says what it says, and stops everything
UNSUBSCRIBED = "unsubscribed from bulk e-mail"


def stops(reason: str, emergency: bool) -> bool:
    """Whether a suppression-list entry stops a message: a family's unsubscribe from the district's
    bulk e-mail does not stop an emergency; a STOP, a bounce, a spam report or the office's list do."""
    return not (emergency and reason.startswith(UNSUBSCRIBED))


def opted_out(key: str, address: str | None, listed: Mapping[str, str], emergency: bool) -> Mark | None:
    """The message held back because its address is on the suppression list (`listed`: address ->
    reason) and the entry stops it, if so."""
    reason = listed.get(address) if address else None
    if reason is None or not stops(reason, emergency):
        return None
    return Mark(key, State.SUPPRESSED, None, f"opted_out: {reason}")


def suppressed(targets: Mapping[str, Target], listed: Mapping[str, str], emergency: bool = False) -> list[Mark]:
    """The targets (by ledger key) held back before rendering: by the audience stage (no consent, no
    contact...) or by the suppression list."""
    marks = (
        Mark(k, State.SUPPRESSED, None, t.held) if t.held else opted_out(k, t.to, listed, emergency)
        for k, t in targets.items()
    )
    return [m for m in marks if m is not None]


def arm(seed: str, student: str, share: float) -> str:
    """ "control" or "treated": the same answer for the same seed and student, on any host and after
    any restart (a hash, not a random draw); `share` of students land in control."""
    u = int.from_bytes(hashlib.sha256(f"{seed}\x00{student}".encode()).digest()[:8], "big") / 2**64
    return "control" if u < share else "treated"


def past(until: dt.date | str | None, today: dt.date) -> str | None:
    """Why news true until `until` (its last day, district time) may no longer go out on `today`, if so:
    a consumer catching up after an outage never texts a family news that is past."""
    if until is None:
        return None
    last = dt.date.fromisoformat(until) if isinstance(until, str) else until
    return f"news past: true until {last.isoformat()}" if today > last else None


def quiet_until(now: dt.datetime, quiet: QuietHours) -> dt.datetime | None:
    """When quiet hours end, if `now` (district time) is inside them."""
    t = now.time()
    inside = (t >= quiet.start or t < quiet.end) if quiet.start > quiet.end else (quiet.start <= t < quiet.end)
    if not inside:
        return None
    day = now.date() if t < quiet.end else now.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, quiet.end, tzinfo=now.tzinfo)


def quiet_hours(
    messages: Sequence[Message], now: dt.datetime, quiet: QuietHours
) -> tuple[list[Message], list[Message], dt.datetime | None]:
    """(may go now, wait for the morning, until when): inside quiet hours only emergencies go."""
    until = quiet_until(now, quiet)
    if until is None:
        return list(messages), [], None
    return (
        [m for m in messages if m.priority == "emergency"],
        [m for m in messages if m.priority != "emergency"],
        until,
    )


def daily_cap(
    messages: Sequence[Message], sent_today: Mapping[str, int], cap: DailyCap
) -> tuple[list[Message], list[Message]]:
    """(may go, held by the cap): at most cap.normal messages per guardian and day on a channel
    (cap.emergency for emergencies), counting those already sent today (`sent_today`)."""
    counts = Counter(sent_today)
    allowed, capped = [], []
    for m in messages:
        if m.guardian and counts[m.guardian] >= cap_of(m, cap):
            capped.append(m)
        else:
            counts[m.guardian or ""] += 1
            allowed.append(m)
    return allowed, capped


def cap_of(m: Message, cap: DailyCap) -> int:
    return cap.emergency if m.priority == "emergency" else cap.normal


def waited_too_long(capped: str | None, today: dt.date, cap: DailyCap) -> str | None:
    """Why a message the cap held since `capped` may no longer go on `today`, if so: it may wait
    cap.hold_days days (a release loop that was down for a week does not send a week-old backlog)."""
    if capped is None:
        return None
    since = dt.date.fromisoformat(capped)
    if (today - since).days <= cap.hold_days:
        return None
    return f"daily_cap: held since {since.isoformat()}, {cap.hold_days} day(s) at most"


def hold_capped(
    capped: Sequence[Message], now: dt.datetime, quiet: QuietHours, cap: DailyCap
) -> tuple[list[tuple[Message, dt.datetime, str]], list[Mark]]:
    """What becomes of messages the cap held (`now` in district time): each waits for the next
    day's window, when quiet hours end, (message, not before, why), until it has waited
    cap.hold_days days since the cap first held it (Message.capped); then it expires."""
    today = now.date()
    later, expired = [], []
    for m in capped:
        since = dt.date.fromisoformat(m.capped) if m.capped else today
        limit = cap_of(m, cap)
        if (today - since).days >= cap.hold_days:
            why = f"daily_cap: {limit} per day; held since {since.isoformat()}, {cap.hold_days} day(s) at most"
            expired.append(Mark(m.key, State.EXPIRED, None, why))
            continue
        window = dt.datetime.combine(today + dt.timedelta(days=1), quiet.end, tzinfo=now.tzinfo)
        why = f"daily_cap: {limit} per day; waits until {window:%Y-%m-%d %H:%M}"
        later.append((replace(m, capped=since.isoformat()), window, why))
    return later, expired


def retention_cutoff(now: dt.datetime, school_year_ends: str, keep_days: int) -> dt.datetime:
    """The instant before which a message's text and address may be forgotten (district time):
    the end of the latest school year that ended at least `keep_days` before `now`."""
    month, day = (int(x) for x in school_year_ends.split("-"))
    year = now.year
    while True:
        end = dt.datetime.combine(dt.date(year, month, day), dt.time(), tzinfo=now.tzinfo) + dt.timedelta(days=1)
        if end + dt.timedelta(days=keep_days) <= now:
            return end
        year -= 1
