"""Settings from the environment, and the wiring of bus, ledger, renderer and channels."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from comms.attendance import AttendanceCounter
from comms.bus import Bus, Record, open_bus
from comms.channels import Channel, channel_classes
from comms.clock import Clock, clock_from_env
from comms.config import Settings, load_settings
from comms.db import is_url
from comms.errors import BusUnavailableError, ConfigError, EventValidationError
from comms.events import Event
from comms.feedback import Feedback
from comms.ledger import Ledger
from comms.pipeline import Pipeline
from comms.pipeline.shards import HEADER, Shard, shard_topic
from comms.render import Renderer
from comms.roster import FIXTURE, Roster
from comms.worker import FEEDBACK, Worker, consumer_names, group_name

DEFAULT_TOPIC = "comms.events"
log = logging.getLogger("comms.app")


@dataclass(frozen=True)
class Env:
    """Every setting the pipeline reads from the environment, with its default."""

    bus_url: str
    config: Path
    templates: Path
    out: Path
    ledger: Path
    roster: Path
    topic: str
    feedback_topic: str  # what the providers report back (comms serve writes it, the feedback consumer reads)
    test_now: str | None = None  # COMMS_TEST_NOW: a fixed clock for tests of quiet hours and caps
    # COMMS_SHARD_SIZE: families per shard of a fan-out that delivery processes on many hosts share
    # (comms/pipeline/shards.py); 0: each channel's consumer delivers whole events, as on one machine
    shard_size: int = 0
    # COMMS_LEDGER=postgresql://...: the ledger on a PostgreSQL server; `ledger` is then only where the
    # files kept beside it on this host go (accounts, producers, attendance counts, the console key)
    ledger_url: str | None = None

    @property
    def ledger_target(self) -> str | Path:
        """What Ledger() opens: the PostgreSQL URL, or the SQLite file."""
        return self.ledger_url or self.ledger

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Env:
        e = os.environ if environ is None else environ
        var = Path(e.get("COMMS_VAR", "var"))
        ledger = e.get("COMMS_LEDGER", str(var / "ledger.db"))
        return cls(
            bus_url=e.get("COMMS_BUS", f"sqlite:///{var / 'bus.db'}"),
            config=Path(e.get("COMMS_CONFIG", "campaigns.yaml")),
            templates=Path(e.get("COMMS_TEMPLATES", "templates")),
            out=Path(e.get("COMMS_OUT", "out")),
            ledger=var / "ledger.db" if is_url(ledger) else Path(ledger),
            ledger_url=ledger if is_url(ledger) else None,
            roster=Path(e.get("COMMS_ROSTER", str(FIXTURE))),
            topic=e.get("COMMS_TOPIC", DEFAULT_TOPIC),
            feedback_topic=e.get("COMMS_FEEDBACK_TOPIC") or f"{e.get('COMMS_TOPIC', DEFAULT_TOPIC)}.feedback",
            test_now=e.get("COMMS_TEST_NOW") or None,
            shard_size=_count(e, "COMMS_SHARD_SIZE"),
        )


def _event_only(handle: Callable[[Event], Counter[str]]) -> Callable[[Event, Record], Counter[str]]:
    return lambda event, _: handle(event)


def _count(environ: Mapping[str, str], name: str) -> int:
    raw = environ.get(name, "0") or "0"
    if not raw.isdigit():
        raise ConfigError(f"{name}={raw!r}: a whole number of families is expected (0: off)")
    return int(raw)


def build_channels(env: Env, environ: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """Each channel's provider where its credentials are in the environment; the dry-run outbox otherwise."""
    e = os.environ if environ is None else environ
    return {c.name: c.from_env(e, env.out) for c in channel_classes()}


def _refuse_real_providers(env: Env, channels: Mapping[str, Channel], environ: Mapping[str, str] | None) -> None:
    """A generated roster's phone numbers are random valid numbers: only a local server may get them."""
    e = os.environ if environ is None else environ
    for ch in channels.values():
        spec = ch.spec
        if type(ch) is spec and spec.api_url_var and spec.credentials:  # a real provider, not the outbox
            host = urlsplit(e.get(spec.api_url_var) or "https://api.example").hostname or ""
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ConfigError(
                    f"roster {env.roster} is synthetic (comms roster generate): its numbers and "
                    f"addresses may be real people's; set {spec.api_url_var} to a local server, or unset "
                    f"{spec.credentials[0]} for the dry-run outbox"
                )


@dataclass
class App:
    env: Env
    settings: Settings
    bus: Bus
    pipeline: Pipeline

    @classmethod
    def open(cls, env: Env | None = None, clock: Clock | None = None, environ: Mapping[str, str] | None = None) -> App:
        env = env or Env.from_environ()
        if clock is None:
            clock = clock_from_env({"COMMS_TEST_NOW": env.test_now} if env.test_now else {})
        settings = load_settings(env.config)
        roster = Roster.load(env.roster)
        channels = build_channels(env, environ)
        if roster.synthetic:
            _refuse_real_providers(env, channels, environ)
        ledger = Ledger(env.ledger_target, clock)
        if env.ledger_url:  # delivery processes on many hosts: one throughput limit per sender for all
            for channel in channels.values():
                channel.share_budget(ledger.take_budget)
        pipeline = Pipeline(settings, roster, Renderer(env.templates), ledger, channels, clock)
        return cls(env, settings, open_bus(env.bus_url), pipeline)

    def workers(self, names: list[str] | None = None) -> list[Worker]:
        by_consumer = {c.consumer: c for c in channel_classes()}
        unknown = [n for n in names or () if n not in consumer_names()]
        if unknown:
            raise ConfigError(f"unknown consumer {unknown[0]!r}; known: {', '.join(consumer_names())}")
        workers = []
        for n in names or consumer_names():
            if n == FEEDBACK:  # the providers' reports, on their own topic: one ledger write per batch
                feedback = Feedback(self.pipeline.ledger)
                consumer = self.bus.consumer(group_name(n), [self.env.feedback_topic])
                workers.append(
                    Worker(
                        n,
                        self.bus,
                        consumer,
                        _event_only(feedback.handle),
                        self.env.feedback_topic,
                        handle_many=feedback.handle_many,
                    )  # fmt: skip
                )
                continue
            consumer = self.bus.consumer(group_name(n), [self.env.topic])
            spec = by_consumer.get(n)
            handle: Callable[[Event, Record], Counter[str]]
            if spec is None:  # attendance: counts a batch of records, publishes the tiers crossed
                counter = self.attendance
                workers.append(
                    Worker(
                        n,
                        self.bus,
                        consumer,
                        _event_only(counter.handle),
                        self.env.topic,
                        handle_many=counter.handle_many,
                        check=counter.check,
                    )  # fmt: skip
                )
                continue
            else:
                # deferred messages exist only where quiet hours or the cap defer them, approved ones
                # where they wait
                held = spec.quiet_hours or spec.daily_cap or spec.gated
                release = functools.partial(self.pipeline.release_due, spec.name) if held else None
                if self.env.shard_size and spec.audience == "families":
                    # this process plans the events it takes, and delivers shards of any event
                    handle = functools.partial(self._plan, spec.name)
                    topic = shard_topic(self.env.topic, spec.name)
                    shard_group = self.bus.consumer(group_name(f"{n}-shards"), [topic])
                    deliver = functools.partial(self._deliver_shard, spec.name)
                    # one shard at a time: a member that took a batch of them would keep the others idle
                    shards = Worker(f"{n}-shards", self.bus, shard_group, deliver, topic, release, max_records=1)
                    workers.append(shards)
                    release = None  # one release loop per process
                else:
                    handle = functools.partial(self._handle, spec.name)
            workers.append(Worker(n, self.bus, consumer, handle, self.env.topic, release))
        return workers

    def _handle(self, channel: str, event: Event, _: Record) -> Counter[str]:
        return self.pipeline.handle(event, channel)

    def _plan(self, channel: str, event: Event, record: Record) -> Counter[str]:
        """Publish the shards of the event's fan-out on the channel (comms/pipeline/shards.py)."""
        planned, counts = self.pipeline.plan(event, channel, self.env.shard_size)
        topic = shard_topic(self.env.topic, channel)
        for shard in planned:
            self.bus.publish(topic, record.value, key=shard.key(event.uid), headers={HEADER: shard.header()})
        return counts

    def _deliver_shard(self, channel: str, event: Event, record: Record) -> Counter[str]:
        shard = Shard.parse(record.headers.get(HEADER, ""))
        if shard.channel != channel:
            raise EventValidationError(f"a shard of {shard.channel} on the {channel} shards' topic")
        return self.pipeline.handle_shard(event, shard)

    @functools.cached_property
    def attendance(self) -> AttendanceCounter:
        return AttendanceCounter(
            self.env.ledger.with_name("attendance.db"), self.settings, self.bus, self.env.topic, self.pipeline.check
        )

    def workers_when_ready(
        self, names: list[str] | None = None, stop: threading.Event | None = None, max_wait: float = 30.0
    ) -> list[Worker]:
        """Workers, once the bus answers: one log line per attempt, backing off to `max_wait` seconds."""
        attempt = 0
        while True:
            try:
                return self.workers(names)
            except BusUnavailableError as exc:
                attempt += 1
                delay = min(max_wait, 2.0**attempt)
                log.warning("bus not ready (%s); attempt %d, retrying in %.0fs", exc, attempt, delay)
                if stop is not None and stop.wait(delay):
                    raise
                if stop is None:
                    time.sleep(delay)

    def close(self) -> None:
        if "attendance" in self.__dict__:
            self.attendance.close()
        self.pipeline.ledger.close()
        for ch in self.pipeline.channels.values():
            ch.close()
        self.bus.close()
