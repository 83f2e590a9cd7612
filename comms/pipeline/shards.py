"""Stage 0 on many hosts: one event's fan-out on a channel split into shards that any number of delivery
processes take from the bus (COMMS_SHARD_SIZE > 0; unset, one process delivers the whole event as on
one machine).

The consumer that takes an event plans it: the audience of each campaign (from the roster every host
holds), rendered once per language to refuse a broken template before anything is published, then one
work item per `size` families. A work item is the event itself (so the delivery process validates it
as any event) with the shard in a header: channel, campaign, the slice of the audience and the
audience's size, which the delivery process checks against its own roster (hosts with different
rosters would deliver the wrong slices). Its key spreads the shards over the topic's partitions.

Whoever takes a shard, the ledger keeps the effect exactly-once: its rows are keyed by event,
campaign, channel and family, and a move to `sending` is a claim only one process wins
(Ledger.mark_sending). A process that dies leaves its shard uncommitted: the group gives it to
another member, which finds the dead one's `sending` rows, reconciles them with the provider once
they are `reconcile_after` old (its claims expire) and sends what the provider does not have.
"""

from __future__ import annotations

from dataclasses import dataclass

from comms.errors import EventValidationError

HEADER = "comms-shard"


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    channel: str
    campaign: str
    start: int
    stop: int
    audience: int  # the campaign's whole audience on the channel, as the planner's roster had it

    def header(self) -> str:
        return f"1 {self.channel} {self.campaign} {self.start} {self.stop} {self.audience}"

    def key(self, event_uid: str) -> str:
        return f"{event_uid}/{self.channel}/{self.campaign}/{self.start}"

    @classmethod
    def parse(cls, header: str) -> Shard:
        try:
            version, channel, campaign, *numbers = header.split(" ")
            start, stop, audience = map(int, numbers)
        except ValueError:
            raise EventValidationError(f"{HEADER} header {header[:80]!r} is not a shard") from None
        if version != "1" or not 0 <= start < stop <= audience:
            raise EventValidationError(f"{HEADER} header {header[:80]!r} is not a shard this version reads")
        return cls(channel=channel, campaign=campaign, start=start, stop=stop, audience=audience)


def split(channel: str, campaign: str, audience: int, size: int) -> list[Shard]:
    """The shards of an audience of `audience` families, `size` each (the last one smaller)."""
    return [
        Shard(channel=channel, campaign=campaign, start=i, stop=min(i + size, audience), audience=audience)
        for i in range(0, audience, size)
    ]


def shard_topic(topic: str, channel: str) -> str:
    """Each channel's shards on a topic of their own: a channel's delivery group reads only its own."""
    return f"{topic}.shards.{channel}"
